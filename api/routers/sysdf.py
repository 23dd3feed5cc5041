"""``GET /system/df`` (``docker system df``): parses ``type`` (API 1.42+), calls
``engine.sysdf.disk_usage`` once and renders the rows for the request's API version.
``POST /build/prune`` (``docker builder prune``, and ``docker system prune`` always) answers as
dockerd with an empty build cache, after dockerd's checks of its options.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.params import Filters
from api.routers.containers_admin import get_admin
from api.versions import api_version
from api.views import containers as container_views
from api.views import images as image_views
from engine import errdefs
from engine.containers.admin import ContainerAdmin
from engine.sysdf import DiskUsageOptions, disk_usage, prune_build_cache
from engine.wiring import Services

router = APIRouter()
_ATOI = re.compile(r"[+-]?[0-9]+")


@router.get("/system/df")
async def system_df(
    request: Request,
    services: Services = Depends(get_services),
    admin: ContainerAdmin = Depends(get_admin),
) -> Response:
    version = api_version(request)
    # Before 1.42 dockerd ignores ``type`` and computes everything.
    types = request.query_params.getlist("type") if version >= (1, 42) else None
    opts = DiskUsageOptions.from_types(types)
    du = await disk_usage(opts, images=services.images, containers=admin, volumes=services.volumes)
    body: dict[str, Any] = {
        "LayersSize": du.layers_size,
        "Images": image_views.list_rows(du.images, version) if du.images is not None else None,
        "Containers": (
            [container_views.summary(r.container, r.image, r.size) for r in du.containers]
            if du.containers is not None
            else None
        ),
        "Volumes": du.volumes,
        "BuildCache": du.build_cache,
    }
    if version < (1, 42):
        body["BuilderSize"] = 0  # deprecated in 1.42; skiff has no build cache to add up
    return image_views.docker_json(body)


def _bytes_option(request: Request, name: str) -> int:
    value = request.query_params.get(name, "")
    if value == "":
        return 0
    if _ATOI.fullmatch(value) is None:
        raise errdefs.InvalidParameter(
            f'{name} is in bytes and expects an integer, got {value}: strconv.Atoi: parsing "{value}": '
            "invalid syntax"
        )
    return int(value)


@router.post("/build/prune")
async def build_prune(request: Request) -> Response:
    filters = Filters.parse(request.query_params.get("filters"))
    # The space options only bound what BuildKit keeps; with nothing cached they change nothing,
    # but a malformed one is refused as dockerd does (reserved-space & co. arrived in API 1.48).
    if api_version(request) >= (1, 48):
        if _bytes_option(request, "reserved-space") == 0:
            _bytes_option(request, "keep-storage")
        _bytes_option(request, "max-used-space")
        _bytes_option(request, "min-free-space")
    else:
        _bytes_option(request, "keep-storage")
    return image_views.docker_json(prune_build_cache(filters.as_dict()))
