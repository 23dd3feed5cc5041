"""Container lifecycle endpoints: create, start, stop, kill, restart, wait, remove, attach, resize, logs.

Each route parses the query the way dockerd's router does (same errors, same order), calls the
container service once and renders. Long answers send their headers at once: ``/wait`` (the CLI
calls it before ``/start`` and blocks on the headers, hijack.md pitfall 3) and ``/logs``. Attach
is hijacked (api/hijack.py); its session logic is ``engine.containers.attach``. Output is framed
with ``api.stdcopy`` unless the container has a TTY.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api import stdcopy
from api.deps import get_services
from api.hijack import HijackedConnection, HijackResponse, Session, stream_content_type
from api.params import docker_bool, read_json_object
from api.versions import api_version
from api.views.images import docker_json
from engine import errdefs
from engine.containers import logconfig
from engine.containers.attach import AttachOptions, AttachSession, LogsOptions, open_logs
from engine.wiring import Services
from runtime.types import parse_signal

router = APIRouter()

_GO_INT = re.compile(r"[+-]?[0-9]+")
_STREAMS = {"stdout": stdcopy.STDOUT, "stderr": stdcopy.STDERR}


def _atoi(value: str | None) -> int:
    """Go's strconv.Atoi, with its error text."""
    text = value or ""
    if not _GO_INT.fullmatch(text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    number = int(text)
    if not -(2**63) <= number < 2**63:
        raise ValueError(f'strconv.Atoi: parsing "{text}": value out of range')
    return number


def _stop_options(request: Request) -> tuple[str | None, int | None]:
    q = request.query_params
    signal: str | None = None
    if api_version(request) >= (1, 42) and q.get("signal"):
        parse_signal(q["signal"])  # 400 before the container is looked up
        signal = q["signal"]
    timeout: int | None = None
    if q.get("t"):
        try:
            timeout = _atoi(q["t"])
        except ValueError as exc:
            raise errdefs.Internal(str(exc)) from None  # dockerd returns the untyped error: 500
    return signal, timeout


async def _json_body(request: Request) -> dict[str, Any]:
    body = await read_json_object(request, "container.Config", check_content_type=False)
    if body is None:
        raise errdefs.InvalidParameter("invalid JSON: got EOF while reading request body")
    return body


@router.post("/containers/create")
async def create(request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _json_body(request)
    host_config = body.get("HostConfig")
    if isinstance(host_config, dict):
        version = api_version(request)
        if version < (1, 25):
            host_config["AutoRemove"] = False  # older clients remove --rm containers themselves
        pids = host_config.get("PidsLimit")
        if isinstance(pids, int) and pids <= 0:
            host_config["PidsLimit"] = None  # 0 and -1 both mean unlimited
    healthcheck = body.get("Healthcheck")
    if isinstance(healthcheck, dict) and api_version(request) < (1, 44):
        healthcheck.pop("StartInterval", None)  # added in API 1.44: dockerd ignores older clients' value
    container, warnings = await services.containers.create(request.query_params.get("name") or None, body)
    return docker_json({"Id": container.id, "Warnings": warnings}, status=201)


@router.post("/containers/{name}/start")
async def start(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if chunked or (length is not None and length.isdigit() and int(length) > 7):
        raise errdefs.InvalidParameter(
            "starting container with non-empty request body was deprecated since API v1.22 "
            "and removed in v1.24"
        )
    await services.containers.start(name)
    return Response(status_code=204)


@router.post("/containers/{name}/stop")
async def stop(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    signal, timeout = _stop_options(request)
    await services.containers.stop(name, signal=signal, timeout=timeout)
    return Response(status_code=204)


@router.post("/containers/{name}/restart")
async def restart(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    signal, timeout = _stop_options(request)
    await services.containers.restart(name, signal=signal, timeout=timeout)
    return Response(status_code=204)


@router.post("/containers/{name}/kill")
async def kill(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    signal = request.query_params.get("signal") or None
    if signal is not None:
        parse_signal(signal)  # "Invalid signal: X", unwrapped, as dockerd's router answers it
    try:
        await services.containers.kill(name, signal)
    except errdefs.EngineError as err:
        # dockerd wraps every backend error (keeping its kind): "Cannot kill container: <name>: ..."
        err.message = f"Cannot kill container: {name}: {err.message}"
        raise
    return Response(status_code=204)


@router.post("/containers/{name}/wait")
async def wait(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    future = services.containers.wait(name, request.query_params.get("condition") or None)

    async def body() -> AsyncIterator[bytes]:
        # At daemon shutdown containers are stopped first, so most waits get their exit code;
        # one that can never be answered ends without a body, as dockerd drops it.
        stopped: asyncio.Future[Any] = asyncio.ensure_future(services.containers.all_stopped.wait())
        waited: asyncio.Future[Any] = future
        try:
            await asyncio.wait([waited, stopped], return_when=asyncio.FIRST_COMPLETED)
            if future.done() and not future.cancelled():
                result = future.result()
                error = {"Message": result.error} if result.error else None
                yield (json.dumps({"Error": error, "StatusCode": result.status_code}) + "\n").encode()
        finally:
            future.cancel()
            stopped.cancel()

    # Starlette sends the headers before the first iteration: the CLI starts the container
    # only once it has them (hijack.md pitfall 3).
    return StreamingResponse(body(), media_type="application/json")


@router.delete("/containers/{name}")
async def remove(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    await services.containers.remove(
        name,
        force=docker_bool(q.get("force")),
        volumes=docker_bool(q.get("v")),
        link=docker_bool(q.get("link")),
    )
    return Response(status_code=204)


@router.post("/containers/{name}/resize")
async def resize(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    try:
        height, width = _atoi(q.get("h")), _atoi(q.get("w"))
    except ValueError as exc:
        raise errdefs.InvalidParameter(str(exc)) from None
    await services.containers.resize(name, height, width)
    return Response(status_code=200)


class _AttachResponse(HijackResponse):
    """HijackResponse that always releases the attach session, even if the hijack never happens."""

    def __init__(self, attach: AttachSession, session: Session, *, api_version: tuple[int, int]) -> None:
        super().__init__(session, tty=attach.tty, api_version=api_version, headers=())
        self.attach = attach

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.attach.close()


@router.post("/containers/{name}/attach")
async def attach(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    options = AttachOptions(
        stdin=docker_bool(q.get("stdin")),
        stdout=docker_bool(q.get("stdout")),
        stderr=docker_bool(q.get("stderr")),
        logs=docker_bool(q.get("logs")),
        stream=docker_bool(q.get("stream")),
        detach_keys=q.get("detachKeys") or "",
    )
    session = AttachSession.open(services.containers, name, options)
    tty = session.tty

    async def run(conn: HijackedConnection) -> None:
        async def write(stream: str, data: bytes) -> None:
            conn.write(data if tty else stdcopy.frame(_STREAMS[stream], data))
            await conn.drain()

        await session.run(conn, write)

    return _AttachResponse(session, run, api_version=api_version(request))


@router.get("/containers/{name}/logs")
async def logs(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    q = request.query_params
    stdout, stderr = docker_bool(q.get("stdout")), docker_bool(q.get("stderr"))
    # dockerd's order: the stream check (400), the lookup (404), then since/until/tail.
    logconfig.validate_log_options(stdout=stdout, stderr=stderr)
    services.containers.get(name)
    options = LogsOptions(
        stdout=stdout,
        stderr=stderr,
        follow=docker_bool(q.get("follow")),
        since_ns=logconfig.parse_since(q.get("since")),
        until_ns=logconfig.parse_until(q.get("until")),
        tail=logconfig.parse_tail(q.get("tail")),
        timestamps=docker_bool(q.get("timestamps")),
        details=docker_bool(q.get("details")),
    )
    container, entries = open_logs(services.containers, name, options)
    tty = container.tty

    async def body() -> AsyncIterator[bytes]:
        # One write per batch of entries: per entry, `docker logs` of 100k lines took 100k sends.
        async for batch in entries:
            if tty:
                yield b"".join(data for _, data in batch)
            else:
                yield b"".join(stdcopy.frame(_STREAMS[stream], data) for stream, data in batch)

    media_type = stream_content_type(tty=tty, api_version=api_version(request))
    return StreamingResponse(body(), media_type=media_type)
