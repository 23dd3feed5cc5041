"""Volume endpoints: list, create, inspect, remove, prune; parse, call VolumeService once, render.

Names use ``{name:path}`` as dockerd's ``{name:.*}`` does, so ``GET /volumes/a/b`` is the volume
404 (``get a/b: no such volume``), not the router's. ``PUT /volumes/{name}`` (swarm cluster
volumes) is not served. API versions before 1.42 prune every unused volume, not only anonymous
ones: that shim (dockerd's router adds ``all=true``) lives here.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.params import Filters, docker_bool, read_json_object
from api.versions import api_version
from api.views.images import docker_json
from engine import errdefs
from engine.wiring import Services

router = APIRouter()

_CREATE_FIELDS = {"Name": str, "Driver": str, "DriverOpts": dict, "Labels": dict}


async def _create_body(request: Request) -> dict[str, Any]:
    """httputils.ReadJSON into a volume.CreateOptions (an empty body is an empty request)."""
    body = await read_json_object(request, "volume.CreateOptions") or {}
    for key, kind in _CREATE_FIELDS.items():
        value = body.get(key)
        if value is None:
            continue
        ok = isinstance(value, kind) and (kind is not dict or all(isinstance(v, str) for v in value.values()))
        if not ok:
            raise errdefs.InvalidParameter(
                f"invalid JSON: json: cannot unmarshal into Go struct field CreateOptions.{key}"
            )
    return body


@router.get("/volumes")
async def list_volumes(request: Request, services: Services = Depends(get_services)) -> Response:
    filters = Filters.parse(request.query_params.get("filters")).as_dict()
    volumes = await services.volumes.list(filters)
    # dockerd's Warnings is a nil slice unless a driver failed: null.
    return docker_json({"Volumes": volumes, "Warnings": None})


@router.post("/volumes/create")
async def create(request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _create_body(request)
    volume = await services.volumes.create(
        body.get("Name") or None,
        driver=body.get("Driver") or None,
        labels=body.get("Labels"),
        options=body.get("DriverOpts"),
    )
    return docker_json(volume, status=201)


@router.post("/volumes/prune")
async def prune(request: Request, services: Services = Depends(get_services)) -> Response:
    filters = Filters.parse(request.query_params.get("filters")).as_dict()
    if api_version(request) < (1, 42):
        filters["all"] = ["true"]  # before 1.42 prune removed named volumes too
    return docker_json(await services.volumes.prune(filters))


@router.get("/volumes/{name:path}")
async def inspect(name: str, services: Services = Depends(get_services)) -> Response:
    return docker_json(await services.volumes.inspect(name))


@router.delete("/volumes/{name:path}")
async def remove(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    await services.volumes.remove(name, force=docker_bool(request.query_params.get("force")))
    return Response(status_code=204)
