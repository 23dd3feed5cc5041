"""``GET /system/df`` (``docker system df``): parses ``type`` (API 1.42+), calls
``engine.sysdf.disk_usage`` once and renders the rows for the request's API version.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.routers.containers_admin import get_admin
from api.versions import api_version
from api.views import containers as container_views
from api.views import images as image_views
from engine.containers.admin import ContainerAdmin
from engine.sysdf import DiskUsageOptions, disk_usage
from engine.wiring import Services

router = APIRouter()


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
