"""``POST /auth`` (``docker login``): check credentials against the registry, answer like dockerd.

The body is an AuthConfig; nothing of it is logged or stored. Refused credentials are a 401 with
dockerd's message (``login attempt to … failed with status: 401 Unauthorized``, or the token
server's ``unauthorized: …``).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.views.images import docker_json
from engine import errdefs
from engine.images.regauth import AuthConfig
from engine.wiring import Services

router = APIRouter()


@router.post("/auth")
async def auth(request: Request, services: Services = Depends(get_services)) -> Response:
    body = await request.body()
    if not body.strip():
        raise errdefs.Internal("EOF")  # Go's json decoder on an empty body; dockerd passes it through
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise errdefs.Internal(f"invalid character in JSON body: {e.msg}") from None
    result = await services.images.login(AuthConfig.from_json(doc))
    return docker_json(result)
