"""api/hijack.py against a REAL uvicorn (DockerH11Protocol on a temp UNIX socket, own thread).

The app below is test-only: attach-like and exec-start-like routes whose sessions echo stdin,
run `cat`, stay silent or write a lot. Clients are raw sockets (exact bytes) and docker-py's
low-level APIClient. httpx.ASGITransport cannot hijack, which one test checks too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import uvicorn
from docker.utils.socket import frames_iter
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from api.headers import SERVER_HEADERS
from api.hijack import (
    EXTENSION,
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    DockerH11Protocol,
    HijackedConnection,
    HijackResponse,
)
from api.stdcopy import STDERR, STDOUT, FrameDecoder, frame

EOF_MARK = b"<stdin closed>\n"
TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# Test-only app
# --------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """Session-side facts the test thread waits on (sessions run in the server's thread)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    started: dict[str, threading.Event] = field(default_factory=dict)
    ended: dict[str, threading.Event] = field(default_factory=dict)
    parked: dict[str, Any] = field(default_factory=dict)

    def event(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        with self.lock:
            return table.setdefault(name, threading.Event())


async def echo(conn: HijackedConnection) -> None:
    while data := await conn.read():
        conn.write(frame(STDOUT, data))
        await conn.drain()
    # Half-close is stdin EOF, not a hangup: output must still reach the client.
    conn.write(frame(STDERR, EOF_MARK))
    await conn.drain()


async def delayed(conn: HijackedConnection) -> None:
    await asyncio.sleep(0.3)
    conn.write(frame(STDOUT, b"late\n"))
    await conn.drain()


async def big(conn: HijackedConnection) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    for _ in range(80):  # 5 MiB
        conn.write(frame(STDOUT, chunk))
        await conn.drain()


async def cat(conn: HijackedConnection) -> None:
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def pump_in() -> None:
        while data := await conn.read():
            stdin.write(data)
            await stdin.drain()
        stdin.close()
        await stdin.wait_closed()

    async def pump_out() -> None:
        while data := await stdout.read(65536):
            conn.write(frame(STDOUT, data))
            await conn.drain()

    try:
        await asyncio.gather(pump_in(), pump_out())
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def boom(conn: HijackedConnection) -> None:
    raise RuntimeError("session exploded")


SESSIONS: dict[str, Callable[[HijackedConnection], Awaitable[None]]] = {
    "echo": echo,
    "delayed": delayed,
    "big": big,
    "cat": cat,
    "boom": boom,
}


class ExecStartConfig(BaseModel):
    Detach: bool = False
    Tty: bool = False
    ConsoleSize: list[int] | None = None


class VersionPrefix:
    """Pure ASGI middleware stripping /vX.Y (BaseHTTPMiddleware would log after each hijack)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (m := re.fullmatch(r"/v(\d+)\.(\d+)(/.*)", scope["path"])):
            scope = {**scope, "path": m[3], "raw_path": m[3].encode(), "api_version": (int(m[1]), int(m[2]))}
        await self.app(scope, receive, send)


def make_app(probe: Probe) -> ASGIApp:
    app = FastAPI()

    def version(request: Request) -> tuple[int, int]:
        v: tuple[int, int] = request.scope.get("api_version", (1, 50))
        return v

    def tracked(name: str, session: Callable[[HijackedConnection], Awaitable[None]]) -> Any:
        async def run(conn: HijackedConnection) -> None:
            probe.event(probe.started, name).set()
            try:
                await session(conn)
            finally:
                probe.event(probe.ended, name).set()

        return run

    async def silent(conn: HijackedConnection) -> None:
        await asyncio.Event().wait()

    @app.get("/_ping")
    async def ping() -> Response:
        return PlainTextResponse("OK")

    @app.get("/park/{name}")
    async def park(name: str, request: Request) -> Response:
        # Holds the request open so the guard test can look at the live protocol and cycle.
        probe.parked[name] = EXTENSION in request.scope.get("extensions", {})
        probe.event(probe.started, name).set()
        while not probe.event(probe.ended, name).is_set():
            await asyncio.sleep(0.01)
        return PlainTextResponse("done")

    @app.post("/containers/{name}/attach")
    async def attach(name: str, request: Request, tty: bool = False) -> Response:
        kind = name.split("-")[0]
        if kind == "missing":
            return JSONResponse({"message": f"No such container: {name}"}, status_code=404)
        if kind == "busy":
            return JSONResponse({"message": f"container {name} is paused"}, status_code=409)
        session = silent if kind == "silent" else SESSIONS[kind]
        # dockerd's attach head carries no extra headers.
        return HijackResponse(tracked(name, session), tty=tty, api_version=version(request), headers=())

    @app.post("/exec/{exec_id}/start")
    async def exec_start(exec_id: str, body: ExecStartConfig, request: Request) -> Response:
        if exec_id == "missing":
            return JSONResponse({"message": f"No such exec instance: {exec_id}"}, status_code=404)
        if exec_id.startswith("slow"):
            await asyncio.sleep(0.3)  # engine work (creating the process) before the hijack

        async def session(conn: HijackedConnection) -> None:
            if exec_id == "hi":
                conn.write(frame(STDOUT, b"hi\n"))
                return
            conn.write(frame(STDOUT, body.model_dump_json().encode() + b"\n"))
            await echo(conn)

        return HijackResponse(tracked(exec_id, session), tty=body.Tty, api_version=version(request))

    return VersionPrefix(app)


# --------------------------------------------------------------------------------------------
# Server and client plumbing
# --------------------------------------------------------------------------------------------


@dataclass
class Daemon:
    path: str
    server: uvicorn.Server
    thread: threading.Thread
    probe: Probe

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def start_daemon(directory: Path, *, graceful_timeout: int = 5) -> Daemon:
    probe = Probe()
    path = str(directory / "api.sock")
    config = uvicorn.Config(
        make_app(probe),
        uds=path,
        http=DockerH11Protocol,
        lifespan="off",
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(TIMEOUT)
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return Daemon(path, server, thread, probe)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="skiff-hijack-", dir="/tmp"))
    try:
        d = start_daemon(directory)
        try:
            yield d
        finally:
            d.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def connect(daemon: Daemon) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        opened.append(s)
        s.settimeout(TIMEOUT)
        s.connect(daemon.path)
        return s

    yield open_socket
    for s in opened:
        s.close()


def http_request(
    method: str, target: str, *, upgrade: bool = True, body: bytes = b"", keep_alive: bool = False
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    if body:
        lines += ["Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_head(s: socket.socket, initial: bytes = b"") -> tuple[bytes, bytes]:
    buf = initial
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the end of the head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def read_to_eof(s: socket.socket, initial: bytes = b"") -> bytes:
    chunks = [initial]
    while chunk := s.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_frames(s: socket.socket, rest: bytes, until: Callable[[bytes], bool]) -> list[tuple[int, bytes]]:
    """Frames until ``until(stdout so far)`` holds."""
    decoder = FrameDecoder()
    frames = decoder.feed(rest)
    while not until(stdout_of(frames)):
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF before the expected output: {frames!r}")
        frames += decoder.feed(chunk)
    return frames


def stdout_of(frames: list[tuple[int, bytes]]) -> bytes:
    return b"".join(data for stream, data in frames if stream == STDOUT)


def head_bytes(
    status: bytes, content_type: str, upgrade: bool, headers: tuple[tuple[str, str], ...]
) -> bytes:
    lines = [b"HTTP/1.1 " + status, b"Content-Type: " + content_type.encode()]
    if upgrade:
        lines += [b"Connection: Upgrade", b"Upgrade: tcp"]
    lines += [f"{k}: {v}".encode() for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def wait_event(event: threading.Event, what: str) -> None:
    assert event.wait(TIMEOUT), f"timed out waiting for {what}"


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/containers/echo-h1/attach", MULTIPLEXED_STREAM),
        ("/v1.42/containers/echo-h2/attach", MULTIPLEXED_STREAM),
        ("/v1.41/containers/echo-h3/attach", RAW_STREAM),
        ("/v1.50/containers/echo-h4/attach?tty=1", RAW_STREAM),
    ],
)
def test_attach_101_head_exact_bytes(
    connect: Callable[[], socket.socket], target: str, content_type: str
) -> None:
    s = connect()
    s.sendall(http_request("POST", target))
    head, _ = read_head(s)
    assert head == head_bytes(b"101 UPGRADED", content_type, True, ())


def test_exec_start_head_carries_server_headers(connect: Callable[[], socket.socket]) -> None:
    s = connect()
    s.sendall(http_request("POST", "/v1.41/exec/x1/start", body=b'{"Tty":false}'))
    head, _ = read_head(s)
    # dockerd's exec start copies its middleware headers (sorted) after the fixed ones.
    assert head == head_bytes(b"101 UPGRADED", RAW_STREAM, True, SERVER_HEADERS)
    assert b"Api-Version: 1.50\r\n" in head and b"Server: skiff/" in head


def test_legacy_request_without_upgrade_is_hijacked_with_200(connect: Callable[[], socket.socket]) -> None:
    s = connect()
    s.sendall(http_request("POST", "/containers/echo-legacy/attach", upgrade=False))
    head, rest = read_head(s)
    # Always raw-stream, no Transfer-Encoding: the bytes that follow are the stream itself.
    assert head == head_bytes(b"200 OK", RAW_STREAM, False, ())
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # would be parsed as a request if not hijacked
    frames = read_frames(s, rest, lambda out: out == b"GET / HTTP/1.1\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    tail = read_to_eof(s)
    assert FrameDecoder().feed(tail) == [(STDERR, EOF_MARK)]
    assert stdout_of(frames) == b"GET / HTTP/1.1\r\n\r\n"


def test_stdin_in_the_same_packet_as_the_request_reaches_the_session(
    connect: Callable[[], socket.socket],
) -> None:
    s = connect()
    s.sendall(http_request("POST", "/containers/echo-early/attach") + b"early stdin\n")
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    frames = read_frames(s, rest, lambda out: len(out) >= len(b"early stdin\n"))
    assert stdout_of(frames) == b"early stdin\n"


def test_request_stdin_and_half_close_in_one_go(connect: Callable[[], socket.socket]) -> None:
    s = connect()
    s.sendall(http_request("POST", "/containers/echo-oneshot/attach") + b"abc")
    s.shutdown(socket.SHUT_WR)
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    frames = FrameDecoder().feed(read_to_eof(s, rest))
    assert frames == [(STDOUT, b"abc"), (STDERR, EOF_MARK)]


def test_exec_start_body_stdin_and_half_close_before_the_hijack(connect: Callable[[], socket.socket]) -> None:
    # Reading the JSON body resumes reading the socket, so the EOF arrives while the route is
    # still busy; uvicorn alone would close the connection then.
    s = connect()
    s.sendall(http_request("POST", "/exec/slow-1/start", body=b'{"Tty":false}') + b"xyz")
    s.shutdown(socket.SHUT_WR)
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    frames = FrameDecoder().feed(read_to_eof(s, rest))
    assert frames[1:] == [(STDOUT, b"xyz"), (STDERR, EOF_MARK)]


def test_exec_start_on_a_keep_alive_connection(connect: Callable[[], socket.socket]) -> None:
    s = connect()
    s.sendall(http_request("GET", "/_ping", upgrade=False))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    while len(rest) < 2:
        rest += s.recv(10)
    assert rest == b"OK"

    body = b'{"Detach":false,"Tty":false,"ConsoleSize":[24,80]}'
    s.sendall(http_request("POST", "/v1.50/exec/keepalive/start", body=body) + b"stdin bytes")
    head, rest = read_head(s)
    assert head.startswith(
        b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
    )
    marker = b"stdin bytes"
    frames = read_frames(s, rest, lambda out: out.endswith(marker))
    parsed, echoed = stdout_of(frames).split(b"\n", 1)
    # The body went to pydantic (ConsoleSize kept) and not to stdin.
    assert json.loads(parsed) == {"Detach": False, "Tty": False, "ConsoleSize": [24, 80]}
    assert echoed == marker


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (http_request("POST", "/containers/missing-1/attach"), 404),
        (http_request("POST", "/containers/busy-1/attach"), 409),
        (http_request("POST", "/exec/missing/start", body=b"{}"), 404),
        (http_request("POST", "/exec/x2/start", body=b'{"Tty":"maybe"}'), 422),
        (http_request("POST", "/exec/x3/start", body=b"{not json"), 422),
    ],
)
def test_error_on_upgrade_request_is_json_then_close(
    connect: Callable[[], socket.socket], request_bytes: bytes, status: int
) -> None:
    s = connect()
    s.sendall(request_bytes + b"stdin that must not be parsed")
    start = time.monotonic()
    response = read_to_eof(s)
    # Closed at once, not by uvicorn's keep-alive timer (5 s) nor by our socket timeout.
    assert time.monotonic() - start < 2.0
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\ncontent-type: application/json\r\n" in head.lower() + b"\r\n"
    assert isinstance(json.loads(body), dict)


def test_half_close_right_after_101_keeps_output_flowing(
    daemon: Daemon, connect: Callable[[], socket.socket]
) -> None:
    s = connect()
    s.sendall(http_request("POST", "/containers/delayed-1/attach"))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    s.shutdown(socket.SHUT_WR)  # what the CLI does at once when no stdin is attached
    frames = FrameDecoder().feed(read_to_eof(s, rest))
    assert frames == [(STDOUT, b"late\n")]
    wait_event(daemon.probe.event(daemon.probe.ended, "delayed-1"), "the session to end")


@pytest.mark.parametrize("half_close_first", [False, True])
def test_client_close_ends_a_silent_session(
    daemon: Daemon, connect: Callable[[], socket.socket], half_close_first: bool
) -> None:
    name = f"silent-{int(half_close_first)}"
    s = connect()
    s.sendall(http_request("POST", f"/containers/{name}/attach"))
    read_head(s)
    wait_event(daemon.probe.event(daemon.probe.started, name), "the session to start")
    ended = daemon.probe.event(daemon.probe.ended, name)
    if half_close_first:
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        assert not ended.is_set(), "a half-close must not end the session"
    start = time.monotonic()
    s.close()
    # The session never writes, so only the POLLHUP watchdog can notice.
    assert ended.wait(1.5), "the session outlived its client"
    assert time.monotonic() - start < 1.5


def test_five_megabytes_through_cat_both_ways(connect: Callable[[], socket.socket]) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    s = connect()
    s.sendall(http_request("POST", "/containers/cat-1/attach"))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    errors: list[BaseException] = []

    def send() -> None:
        try:
            view = memoryview(payload)
            for offset in range(0, len(payload), 100_000):
                s.sendall(view[offset : offset + 100_000])
            s.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        frames = FrameDecoder().feed(read_to_eof(s, rest))
    finally:
        sender.join(TIMEOUT)
    assert not errors
    assert stdout_of(frames) == payload


def test_five_megabytes_to_a_slow_reader(connect: Callable[[], socket.socket]) -> None:
    s = connect()
    s.sendall(http_request("POST", "/containers/big-1/attach"))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    time.sleep(0.5)  # let the socket and the transport buffer fill: drain() must wait
    out = stdout_of(FrameDecoder().feed(read_to_eof(s, rest)))
    assert out == bytes(range(256)) * 256 * 80


def test_session_error_is_logged_and_closes(
    connect: Callable[[], socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="skiff.api")
    s = connect()
    s.sendall(http_request("POST", "/containers/boom-1/attach"))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    assert read_to_eof(s, rest) == b""
    assert any(r.getMessage() == "hijacked session failed" for r in caplog.records)


def test_no_upgrade_warning_and_own_access_log(
    connect: Callable[[], socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = connect()
    s.sendall(http_request("POST", "/v1.44/containers/echo-log/attach?stdin=1"))
    read_head(s)
    s.shutdown(socket.SHUT_WR)
    read_to_eof(s)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Unsupported upgrade request" in m]
    access = [r.getMessage() for r in caplog.records if r.name == "skiff.api"]
    assert any(re.fullmatch(r"POST /v1\.44/containers/echo-log/attach 101 \d+ms", m) for m in access), access


def test_docker_py_exec_start_and_attach_socket(daemon: Daemon) -> None:
    client = docker.APIClient(base_url=f"unix://{daemon.path}", version="1.50", timeout=TIMEOUT)
    try:
        # Output sent right after the head is lost by docker-py unless the server waits for
        # the head to be read first (hijack.md pitfall 7); 30 runs catch the race.
        for _ in range(30):
            assert client.exec_start("hi") == b"hi\n"

        with pytest.raises(docker.errors.NotFound, match="No such exec instance: missing"):
            client.exec_start("missing")

        sock = client.attach_socket("echo-dockerpy", params={"stdin": 1, "stdout": 1, "stream": 1})
        raw: socket.socket = sock._sock
        try:
            raw.sendall(b"hello docker-py")
            raw.shutdown(socket.SHUT_WR)
            got = list(frames_iter(sock, tty=False))
        finally:
            sock._response.close()
            sock.close()
            raw.close()
        assert got == [(STDOUT, b"hello docker-py"), (STDERR, EOF_MARK)]
    finally:
        client.close()


def test_guard_uvicorn_internals_exist(daemon: Daemon, connect: Callable[[], socket.socket]) -> None:
    """Fails loudly if a uvicorn upgrade renames what api/hijack.py relies on."""
    s = connect()
    s.sendall(http_request("GET", "/park/guard", upgrade=False))
    wait_event(daemon.probe.event(daemon.probe.started, "guard"), "the parked request")
    try:
        # The extension is published only when send.__self__ is uvicorn's cycle.
        assert daemon.probe.parked["guard"] is True
        protocols = [
            p for p in list(daemon.server.server_state.connections) if isinstance(p, DockerH11Protocol)
        ]
        parked = [p for p in protocols if p.cycle is not None and not p.cycle.response_complete]
        assert len(parked) == 1
        proto = parked[0]
        for name in ("app", "transport", "loop", "connections", "server_state", "headers", "conn", "cycle"):
            assert hasattr(proto, name), f"H11Protocol.{name} is gone"
        assert proto.connections is proto.server_state.connections
        assert isinstance(proto.conn.trailing_data, tuple)
        for method in (
            "_unset_keepalive_if_required",
            "_unsupported_upgrade_warning",
            "eof_received",
            "shutdown",
        ):
            assert callable(getattr(H11Protocol, method, None)), f"H11Protocol.{method} is gone"
        assert hasattr(proto, "access_log")  # listed in hijack.md §1
        cycle = proto.cycle
        assert type(cycle) is RequestResponseCycle
        for name in (
            "response_started",
            "response_complete",
            "disconnected",
            "on_response",
            "message_event",
            "keep_alive",
            "transport",
        ):
            assert hasattr(cycle, name), f"RequestResponseCycle.{name} is gone"
        assert isinstance(cycle.message_event, asyncio.Event)
        assert cycle.send.__self__ is cycle  # type: ignore[attr-defined]
    finally:
        daemon.probe.event(daemon.probe.ended, "guard").set()
    head, _ = read_head(s)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")


def test_graceful_shutdown_with_a_live_hijacked_connection() -> None:
    directory = Path(tempfile.mkdtemp(prefix="skiff-hijack-", dir="/tmp"))
    try:
        # A graceful timeout far above the budget: only closing the raw connection is fast.
        d = start_daemon(directory, graceful_timeout=30)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(TIMEOUT)
            s.connect(d.path)
            s.sendall(http_request("POST", "/containers/silent-shutdown/attach"))
            read_head(s)
            wait_event(d.probe.event(d.probe.started, "silent-shutdown"), "the session to start")
            start = time.monotonic()
            d.server.should_exit = True
            d.thread.join(TIMEOUT)
            assert not d.thread.is_alive()
            assert time.monotonic() - start < 3.0
            assert d.probe.event(d.probe.ended, "silent-shutdown").is_set()
            assert read_to_eof(s) == b""
        finally:
            s.close()
            d.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_without_the_extension_the_response_is_a_500() -> None:
    app = make_app(Probe())

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://docker") as client:
            return await client.post("/containers/echo-x/attach")

    response = asyncio.run(call())
    assert response.status_code == 500
    assert response.json() == {"message": "hijacking not supported"}
    assert response.headers["content-type"] == "application/json"


def test_hijacked_connection_over_a_socketpair() -> None:
    """The raw protocol alone: half-close, head-read wait, hangup watchdog (no HTTP involved)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server_sock, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        connections: set[Any] = set()
        transport, conn = await loop.connect_accepted_socket(
            lambda: HijackedConnection(connections), server_sock
        )
        try:
            assert connections == {conn}
            conn.write(b"head")
            start = time.monotonic()
            await conn.wait_head_read(timeout=0.2)  # nobody reads: gives up after the timeout
            assert time.monotonic() - start >= 0.15
            assert await loop.sock_recv(client, 10) == b"head"

            await loop.sock_sendall(client, b"stdin")
            assert await conn.read() == b"stdin"
            client.shutdown(socket.SHUT_WR)
            assert await conn.read() == b""
            assert conn.at_eof and not conn.closed
            conn.write(b"still flowing")
            await conn.drain()
            assert await loop.sock_recv(client, 100) == b"still flowing"

            start = time.monotonic()
            client.close()
            await asyncio.wait_for(conn.wait_hangup(), 1.5)
            assert time.monotonic() - start < 1.5
            assert conn.closed and connections == set()
            with pytest.raises(ConnectionResetError):
                conn.write(b"too late")
        finally:
            transport.close()
            client.close()

    asyncio.run(scenario())
