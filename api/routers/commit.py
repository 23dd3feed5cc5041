"""``POST /commit``: parse the query and the optional Config body as dockerd's router does, call
``engine.images.commit.commit_container`` once, answer 201 ``{"Id": …}``.

The body is a container create request whose Config fields (at the top level) override the
container's Config; Go leaves that Config nil for an empty body, ``null`` or ``{}`` (docker-py
sends ``{}``), and then the container's own Config is committed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.params import docker_bool, read_json_object
from api.routers.containers_admin import get_admin
from api.views.images import docker_json
from engine.containers.admin import ContainerAdmin
from engine.images.commit import CommitOptions, commit_container
from engine.wiring import Services

router = APIRouter()

_NOT_CONFIG = ("HostConfig", "NetworkingConfig")


async def _config_body(request: Request) -> dict[str, Any] | None:
    """httputils.CheckForJSON, then the create-request decoder; None when no Config was sent."""
    body = await read_json_object(request, "container.CreateRequest")
    if body is None:
        return None  # io.EOF: dockerd commits the container's own Config
    config = {k: v for k, v in body.items() if k not in _NOT_CONFIG and v is not None}
    return config or None


@router.post("/commit")
async def commit(
    request: Request,
    services: Services = Depends(get_services),
    admin: ContainerAdmin = Depends(get_admin),
) -> Response:
    q = request.query_params
    options = CommitOptions(
        repo=q.get("repo", ""),
        tag=q.get("tag", ""),
        author=q.get("author", ""),
        comment=q.get("comment", ""),
        changes=q.getlist("changes"),
        config=await _config_body(request),
        pause=docker_bool(q.get("pause"), default=True),
    )
    image_id = await commit_container(
        services.containers, admin, services.images, q.get("container", ""), options
    )
    return docker_json({"Id": image_id}, status=201)
