"""Container administration routes: list, inspect, rename, pause/unpause, update, top, prune,
changes and export. Each parses the request as dockerd's router does, calls ``ContainerAdmin``
once and renders through ``api.views.containers``.

One ``ContainerAdmin`` serves the app (it carries the one-prune-at-a-time flag); it is built on
first use from ``services.containers`` and ``services.execs``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from api.deps import get_services
from api.params import Filters, docker_bool, read_json_object
from api.views import containers as views
from api.views.images import docker_json
from engine import errdefs
from engine.containers.admin import ContainerAdmin
from engine.wiring import Services

router = APIRouter()

_GO_INT = re.compile(r"[+-]?[0-9]+")


async def get_admin(request: Request, services: Services = Depends(get_services)) -> ContainerAdmin:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop per request.
    admin: ContainerAdmin | None = getattr(request.app.state, "containers_admin", None)
    if admin is None or admin.containers is not services.containers:
        admin = ContainerAdmin(services.containers, exec_ids=services.execs.exec_ids)
        request.app.state.containers_admin = admin
    return admin


def _limit(value: str | None) -> int:
    """strconv.Atoi on ``limit``; dockerd relays its error untyped (a 500)."""
    if not value:
        return 0
    if not _GO_INT.fullmatch(value) or not -(2**63) <= int(value) < 2**63:
        reason = "invalid syntax" if not _GO_INT.fullmatch(value) else "value out of range"
        raise errdefs.Internal(f'strconv.Atoi: parsing "{value}": {reason}')
    return int(value)


async def _update_body(request: Request) -> dict[str, Any]:
    """httputils.ReadJSON into a container.UpdateConfig; an empty body changes nothing."""
    return await read_json_object(request, "container.UpdateConfig") or {}


@router.get("/containers/json")
async def list_containers(request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    q = request.query_params
    filters = Filters.parse(q.get("filters")).as_dict()
    rows = await admin.list_containers(
        filters, all=docker_bool(q.get("all")), limit=_limit(q.get("limit")), size=docker_bool(q.get("size"))
    )
    return docker_json([views.summary(r.container, r.image, r.size) for r in rows])


@router.post("/containers/prune")
async def prune(request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    filters = Filters.parse(request.query_params.get("filters")).as_dict()
    return docker_json(await admin.prune(filters))


@router.get("/containers/{name}/json")
async def inspect(name: str, request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    found = await admin.inspect(name, size=docker_bool(request.query_params.get("size")))
    return docker_json(
        views.inspect(
            found.container, graph_driver=found.graph_driver, exec_ids=found.exec_ids, size=found.size
        )
    )


@router.post("/containers/{name}/rename")
async def rename(name: str, request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    await admin.rename(name, request.query_params.get("name", ""))
    return Response(status_code=204)


@router.post("/containers/{name}/pause")
async def pause(name: str, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    await admin.pause(name)
    return Response(status_code=204)


@router.post("/containers/{name}/unpause")
async def unpause(name: str, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    await admin.unpause(name)
    return Response(status_code=204)


@router.post("/containers/{name}/update")
async def update(name: str, request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    body = await _update_body(request)
    warnings = await admin.update(name, body)
    # dockerd's warnings slice stays nil when nothing was appended: JSON null, not [].
    return docker_json({"Warnings": warnings or None})


@router.get("/containers/{name}/top")
async def top(name: str, request: Request, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    return docker_json(await admin.top(name, request.query_params.get("ps_args", "")))


@router.get("/containers/{name}/changes")
async def changes(name: str, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    return docker_json(await admin.changes(name))


@router.get("/containers/{name}/export")
async def export(name: str, admin: ContainerAdmin = Depends(get_admin)) -> Response:
    return StreamingResponse(await admin.export(name), media_type="application/x-tar")
