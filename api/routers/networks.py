"""Network endpoints: list, inspect, create, remove, prune, connect, disconnect.

Parse the request, call NetworkService once, render. ``GET /networks/`` is dockerd's alias of the
list. Names use ``{ref:path}`` so that ``GET /networks/a/b`` is the network 404, not the router's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.params import Filters, read_json_object
from api.views.images import docker_json
from engine import errdefs
from engine.wiring import Services

router = APIRouter()

_BOOL_FIELDS = ("Internal", "Attachable", "EnableIPv6", "CheckDuplicate", "Ingress", "ConfigOnly")
_MAP_FIELDS = ("Labels", "Options")


async def _json_body(request: Request, go_type: str) -> dict[str, Any]:
    return await read_json_object(request, go_type, check_content_type=False) or {}


def _check_create(body: dict[str, Any]) -> None:
    def bad(key: str) -> errdefs.InvalidParameter:
        return errdefs.InvalidParameter(
            f"invalid JSON: json: cannot unmarshal into Go struct field CreateRequest.{key}"
        )

    if body.get("Name") is not None and not isinstance(body["Name"], str):
        raise bad("Name")
    if body.get("Driver") is not None and not isinstance(body["Driver"], str):
        raise bad("Driver")
    for key in _BOOL_FIELDS:
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise bad(key)
    for key in _MAP_FIELDS:
        value = body.get(key)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise bad(key)
    ipam = body.get("IPAM")
    if ipam is not None:
        if not isinstance(ipam, dict):
            raise bad("IPAM")
        config = ipam.get("Config")
        if config is not None and not (isinstance(config, list) and all(isinstance(c, dict) for c in config)):
            raise bad("IPAM.Config")


@router.get("/networks")
@router.get("/networks/")
async def list_networks(request: Request, services: Services = Depends(get_services)) -> Response:
    filters = Filters.parse(request.query_params.get("filters")).as_dict()
    return docker_json(await services.networks.list(filters))


@router.post("/networks/create")
async def create(request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _json_body(request, "network.CreateRequest")
    _check_create(body)
    ipam = body.get("IPAM") or {}
    result = await services.networks.create(
        body.get("Name") or "",
        body.get("Driver") or None,
        internal=bool(body.get("Internal")),
        attachable=bool(body.get("Attachable")),
        enable_ipv6=bool(body.get("EnableIPv6")),
        labels=body.get("Labels"),
        options=body.get("Options"),
        ipam_driver=ipam.get("Driver") or None,
        ipam_config=ipam.get("Config"),
        ipam_options=ipam.get("Options"),
    )
    return docker_json(result, status=201)


@router.post("/networks/prune")
async def prune(request: Request, services: Services = Depends(get_services)) -> Response:
    filters = Filters.parse(request.query_params.get("filters")).as_dict()
    return docker_json(await services.networks.prune(filters))


@router.post("/networks/{ref:path}/connect")
async def connect(ref: str, request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _json_body(request, "network.ConnectOptions")
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise errdefs.InvalidParameter("no container specified")
    config = body.get("EndpointConfig")
    await services.networks.connect(ref, container, config if isinstance(config, dict) else None)
    return Response(status_code=200)


@router.post("/networks/{ref:path}/disconnect")
async def disconnect(ref: str, request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _json_body(request, "network.DisconnectOptions")
    container = body.get("Container")
    if not isinstance(container, str) or not container:
        raise errdefs.InvalidParameter("no container specified")
    await services.networks.disconnect(ref, container, force=body.get("Force") is True)
    return Response(status_code=200)


@router.get("/networks/{ref:path}")
async def inspect(ref: str, services: Services = Depends(get_services)) -> Response:
    return docker_json(await services.networks.inspect(ref))


@router.delete("/networks/{ref:path}")
async def remove(ref: str, services: Services = Depends(get_services)) -> Response:
    await services.networks.remove(ref)
    return Response(status_code=204)
