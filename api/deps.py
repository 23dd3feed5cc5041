"""FastAPI dependencies shared by the routers.

Routers declare ``services: Services = Depends(get_services)``; the composition root
(``engine.wiring.build``) puts the one ``Services`` on ``app.state`` in ``create_app``.
"""

from __future__ import annotations

from typing import cast

from starlette.requests import HTTPConnection

from engine.wiring import Services


async def get_services(request: HTTPConnection) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its worker-thread pool, a
    # thread hop (and a pool thread) per request for a single attribute read.
    return cast(Services, request.app.state.services)
