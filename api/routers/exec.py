"""Exec endpoints: create, start (hijacked, or detached), resize, inspect.

Start validates everything it can before taking over the connection: a bad body (400), an
unknown exec (404) or a container that is not running or paused (409) are ordinary JSON answers.
After the hijack, dockerd reports a start failure ("already running", "executable file not
found") as text on the stdout stream followed by "\\r\\n"; the CLI prints it and takes the exit
code from ``GET /exec/{id}/json``, which the engine has set by then.

The stream is framed (``api/stdcopy``) unless the start body says ``Tty`` (dockerd looks at the
start body, not at the exec's own Tty); ``ConsoleSize`` counts only with ``Tty`` and API >= 1.42.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.deps import get_services
from api.hijack import HijackedConnection, HijackResponse, Session
from api.params import go_json_kind, read_json_object
from api.stdcopy import STDERR, STDOUT, frame
from api.versions import api_version
from api.views.images import docker_json
from engine import errdefs
from engine.containers.exec import ExecRecord, ExecSession, parse_console_size
from engine.containers.logs import StreamName
from engine.wiring import Services

router = APIRouter()

CREATE_FIELDS = (
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "ConsoleSize",
    "Env",
    "Cmd",
    "Privileged",
    "User",
    "WorkingDir",
    "DetachKeys",
)
START_FIELDS = ("Detach", "Tty", "ConsoleSize")
FIRST_VERSION_WITH_CONSOLE_SIZE = (1, 42)

_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = (1 << 63) - 1


@router.post("/containers/{name}/exec")
async def exec_create(name: str, request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _read_json(request, CREATE_FIELDS)
    if api_version(request) < FIRST_VERSION_WITH_CONSOLE_SIZE:
        body.pop("ConsoleSize", None)
    record = await services.execs.create(name, body)
    return docker_json({"Id": record.id}, status=201)


@router.post("/exec/{exec_id}/start")
async def exec_start(exec_id: str, request: Request, services: Services = Depends(get_services)) -> Response:
    body = await _read_json(request, START_FIELDS)
    detach = _bool(body, "Detach")
    tty = _bool(body, "Tty")
    version = api_version(request)
    console_size = parse_console_size(body.get("ConsoleSize"))
    if not tty or version < FIRST_VERSION_WITH_CONSOLE_SIZE:
        console_size = None
    session = await services.execs.start(exec_id, detach=detach, console_size=console_size)
    if session is None:
        return Response(status_code=200)  # dockerd: no body, no Content-Type
    return HijackResponse(_stream(session, tty=tty), tty=tty, api_version=version)


@router.post("/exec/{exec_id}/resize")
async def exec_resize(
    exec_id: str,
    h: str | None = None,
    w: str | None = None,
    services: Services = Depends(get_services),
) -> Response:
    height, width = _atoi(h), _atoi(w)
    await services.execs.resize(exec_id, height, width)
    return Response(status_code=200)


@router.get("/exec/{exec_id}/json")
async def exec_inspect(exec_id: str, services: Services = Depends(get_services)) -> Response:
    return docker_json(inspect_view(services.execs.inspect(exec_id)))


def inspect_view(record: ExecRecord) -> dict[str, Any]:
    """dockerd's ExecInspect, fields in its order; ``user`` is omitted when empty."""
    process: dict[str, Any] = {
        "tty": record.tty,
        "entrypoint": record.entrypoint,
        "arguments": list(record.arguments),
        "privileged": record.privileged,
    }
    if record.user:
        process["user"] = record.user
    return {
        "ID": record.id,
        "Running": record.running,
        "ExitCode": record.exit_code,
        "ProcessConfig": process,
        "OpenStdin": record.open_stdin,
        "OpenStderr": record.open_stderr,
        "OpenStdout": record.open_stdout,
        "CanRemove": record.can_remove,
        "ContainerID": record.container_id,
        # A Go []byte: base64 in JSON.
        "DetachKeys": base64.b64encode(record.detach_keys).decode(),
        "Pid": record.pid,
    }


def _stream(session: ExecSession, *, tty: bool) -> Session:
    async def run(conn: HijackedConnection) -> None:
        async def write(stream: StreamName, data: bytes) -> None:
            conn.write(data if tty else frame(STDOUT if stream == "stdout" else STDERR, data))
            await conn.drain()

        try:
            await session.run(conn, write)
        except errdefs.EngineError as err:
            with contextlib.suppress(ConnectionError):
                await write("stdout", f"{err.message}\r\n".encode())

    return run


async def _read_json(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """dockerd's httputils.ReadJSON, with Go's case-insensitive field matching."""
    data = await read_json_object(request, "container.ExecOptions")
    if data is None:
        return {}
    return _fold(data, fields)


def _fold(data: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """Go's encoding/json: an exact key wins, otherwise the key matches case-insensitively."""
    out: dict[str, Any] = {}
    for name in fields:
        if name in data:
            out[name] = data[name]
            continue
        for key, value in data.items():
            if key.lower() == name.lower():
                out[name] = value
                break
    return out


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise errdefs.InvalidParameter(
            f"invalid JSON: cannot unmarshal {go_json_kind(value)} into field {key} of type bool"
        )
    return value


def _atoi(value: str | None) -> int:
    """Go's strconv.Atoi, with its error text (dockerd answers 400 with it)."""
    text = value or ""
    if not _GO_INT.fullmatch(text):
        raise errdefs.InvalidParameter(f'strconv.Atoi: parsing "{text}": invalid syntax')
    number = int(text)
    if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise errdefs.InvalidParameter(f'strconv.Atoi: parsing "{text}": value out of range')
    return number
