"""``docker cp`` routes: ``HEAD``, ``GET`` and ``PUT /containers/{name}/archive?path=``.

Parsing as dockerd's ``ArchiveFormValues`` (an empty ``path`` is 400 ``bad parameter: pathcannot
be empty``, missing space included), then one ``ContainerArchive`` call. The path's stat travels
in ``X-Docker-Container-Path-Stat`` on HEAD and GET; PUT answers 200 with an empty body.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from api.deps import get_services
from api.params import docker_bool
from engine import errdefs
from engine.containers.archive import STAT_HEADER, ContainerArchive
from engine.wiring import Services

router = APIRouter()


def _path(request: Request) -> str:
    path = request.query_params.get("path", "")
    if not path:
        raise errdefs.InvalidParameter("bad parameter: pathcannot be empty")
    return path


def get_archive(services: Services = Depends(get_services)) -> ContainerArchive:
    return ContainerArchive(services.containers)


@router.head("/containers/{name}/archive")
async def stat_path(
    name: str, request: Request, archive: ContainerArchive = Depends(get_archive)
) -> Response:
    found = await archive.stat(name, _path(request))
    return Response(status_code=200, headers={STAT_HEADER: found.header()})


@router.get("/containers/{name}/archive")
async def get_path(name: str, request: Request, archive: ContainerArchive = Depends(get_archive)) -> Response:
    found, stream = await archive.get(name, _path(request))
    return StreamingResponse(stream, media_type="application/x-tar", headers={STAT_HEADER: found.header()})


@router.put("/containers/{name}/archive")
async def put_path(name: str, request: Request, archive: ContainerArchive = Depends(get_archive)) -> Response:
    path = _path(request)
    query = request.query_params
    await archive.put(
        name,
        path,
        request.stream(),
        copy_uid_gid=docker_bool(query.get("copyUIDGID")),
        no_overwrite_dir_non_dir=docker_bool(query.get("noOverwriteDirNonDir")),
    )
    return Response(status_code=200)
