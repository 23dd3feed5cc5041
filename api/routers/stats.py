"""``GET /containers/{name}/stats`` (``docker stats``): one JSON object, or one a second.

As dockerd's router: ``stream`` defaults to true, ``one-shot`` is read from API 1.41 on, and only
the single answer gets ``Content-Type: application/json`` (the stream is flushed before any byte,
so dockerd sends it without one). The stream ends when the client goes away: the next write fails.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from api.deps import get_services
from api.params import docker_bool
from api.versions import api_version
from engine.containers.stats import StatsService
from engine.wiring import Services

router = APIRouter()


async def get_stats_service(request: Request, services: Services = Depends(get_services)) -> StatsService:
    # async: a plain ``def`` dependency would hop to the thread pool for an attribute read.
    svc: StatsService | None = getattr(request.app.state, "stats_service", None)
    if svc is None or svc.containers is not services.containers:
        svc = StatsService(services.containers)
        request.app.state.stats_service = svc
    return svc


def _encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@router.get("/containers/{name}/stats")
async def container_stats(
    name: str, request: Request, svc: StatsService = Depends(get_stats_service)
) -> Response:
    q = request.query_params
    stream = docker_bool(q.get("stream"), default=True)
    one_shot = docker_bool(q.get("one-shot")) if api_version(request) >= (1, 41) else False
    frames = await svc.stats(name, stream=stream, one_shot=one_shot)

    async def body() -> AsyncIterator[bytes]:
        async for frame in frames:
            yield _encode(frame)

    return StreamingResponse(body(), media_type=None if stream else "application/json")
