"""Image endpoints: parse the request, call ImageService once, render.

Suffix routes (``/json``, ``/history``, ``/push``, ``/tag``, ``/get``) come before the ``DELETE``
catch-all, and names use ``{name:path}`` because references contain ``/`` and ``:``. Request bodies
(load, import) are read completely before a response starts: Starlette's streaming response listens
for the client's disconnect on the same receive channel the body arrives on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from api.deps import get_services
from api.params import Filters, docker_bool
from api.versions import api_version
from api.views import images as image_views
from engine.images import progress
from engine.images.progress import Message
from engine.images.regauth import AuthConfig
from engine.wiring import Services

router = APIRouter()


async def _encoded(stream: AsyncIterator[Message]) -> AsyncIterator[bytes]:
    async for message in stream:
        yield progress.encode(message)


def _filters(raw: str | None) -> dict[str, list[str]]:
    return Filters.parse(raw).as_dict()


@router.get("/images/json")
async def list_images(request: Request, services: Services = Depends(get_services)) -> Response:
    q, version = request.query_params, api_version(request)
    filters = _filters(q.get("filters"))
    if version < (1, 41) and q.get("filter"):  # the pre-1.41 spelling of a reference filter
        filters.setdefault("reference", []).append(q["filter"])
    rows = await services.images.list_images(
        filters,
        all=docker_bool(q.get("all")),
        digests=docker_bool(q.get("digests")),
        shared_size=version >= (1, 42) and docker_bool(q.get("shared-size")),
    )
    return image_views.docker_json(image_views.list_rows(rows, version))


@router.post("/images/load")
async def load(request: Request, services: Services = Depends(get_services)) -> Response:
    quiet = docker_bool(request.query_params.get("quiet"), default=True)
    stream = await services.images.load(request.stream(), quiet=quiet)
    return StreamingResponse(_encoded(stream), media_type="application/json")


@router.get("/images/get")
async def save_many(request: Request, services: Services = Depends(get_services)) -> Response:
    stream = await services.images.export(request.query_params.getlist("names"))
    return StreamingResponse(stream, media_type="application/x-tar")


@router.post("/images/create")
async def create(request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    if q.get("fromImage"):
        # An X-Registry-Auth that does not decode counts as none, as in dockerd.
        auth = AuthConfig.from_header(request.headers.get("X-Registry-Auth"))
        platform = q.get("platform", "") if api_version(request) >= (1, 32) else ""
        pulled = await services.images.pull(q["fromImage"], q.get("tag", ""), platform, auth)
        return StreamingResponse(_encoded(pulled), media_type="application/json")
    image_id = await services.images.import_image(
        request.stream(),
        src=q.get("fromSrc", ""),
        repo=q.get("repo", ""),
        tag=q.get("tag", ""),
        # dockerd's router: an import without -m is commented with its source.
        message=q.get("message") or "Imported from " + q.get("fromSrc", ""),
        changes=q.getlist("changes"),
        platform=q.get("platform", ""),
    )
    return Response(progress.encode(progress.status(image_id)), media_type="application/json")


@router.post("/images/prune")
async def prune(request: Request, services: Services = Depends(get_services)) -> Response:
    report = await services.images.prune(_filters(request.query_params.get("filters")))
    return image_views.docker_json(report)


@router.get("/images/{name:path}/json")
async def inspect(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    doc = await services.images.inspect(name)
    return image_views.docker_json(image_views.inspect(doc, api_version(request)))


@router.get("/images/{name:path}/history")
async def history(name: str, services: Services = Depends(get_services)) -> Response:
    return image_views.docker_json(await services.images.history(name))


@router.post("/images/{name:path}/push")
async def push(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    auth = AuthConfig.from_header(request.headers.get("X-Registry-Auth"))
    pushed = await services.images.push(name, request.query_params.get("tag", ""), auth)
    return StreamingResponse(_encoded(pushed), media_type="application/json")


@router.post("/images/{name:path}/tag")
async def tag(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    tagged = await services.images.tag(name, q.get("repo", ""), q.get("tag", ""))
    # dockerd answers 200 and does nothing when no repo is given.
    return Response(status_code=201 if tagged else 200)


@router.get("/images/{name:path}/get")
async def save_one(name: str, services: Services = Depends(get_services)) -> Response:
    stream = await services.images.export([name])
    return StreamingResponse(stream, media_type="application/x-tar")


@router.delete("/images/{name:path}")
async def remove(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    records = await services.images.delete(
        name, force=docker_bool(q.get("force")), noprune=docker_bool(q.get("noprune"))
    )
    return image_views.docker_json(records)
