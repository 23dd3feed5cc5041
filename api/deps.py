"""FastAPI dependencies shared by the routers.

Routers declare ``services: Services = Depends(get_services)``; the composition root
(``engine.wiring.build``) puts the one ``Services`` on ``app.state`` in ``create_app``.
"""

from __future__ import annotations

from typing import cast

from starlette.requests import HTTPConnection

from engine.wiring import Services


def get_services(request: HTTPConnection) -> Services:
    return cast(Services, request.app.state.services)
