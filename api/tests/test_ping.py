"""api/ping.py: which requests take the /_ping fast path, and that its bytes and log line are the
ASGI route's, on a REAL uvicorn (PingFastPathProtocol on a temp UNIX socket, own thread)."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import h11
import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from api.app import create_app
from api.ping import PING_TARGETS, PingFastPathProtocol, parse_ping
from api.tests.fakes import unused
from engine.wiring import Services

TIMEOUT = 10.0
HOST = b"Host: docker\r\n"


def request(method: str, target: str, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"%s %s %s\r\n%s\r\n" % (method.encode(), target.encode(), version, b"".join(headers))


# --------------------------------------------------------------------------------------------
# Which requests qualify (pure logic)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (request("GET", "/_ping", HOST), ("GET", "/_ping")),
        (request("HEAD", "/_ping", HOST), ("HEAD", "/_ping")),
        (request("GET", "/v1.24/_ping", HOST), ("GET", "/v1.24/_ping")),
        (request("HEAD", "/v1.50/_ping", HOST), ("HEAD", "/v1.50/_ping")),
        # What the docker CLI, docker-py and httpx send.
        (
            request(
                "GET",
                "/_ping",
                b"Host: api.moby.localhost\r\n",
                b"User-Agent: Docker-Client/28.2.2 (linux)\r\n",
                b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n",
            ),
            ("GET", "/_ping"),
        ),
        (request("GET", "/_ping", b"host:docker\r\n", b"X-Empty:\r\n"), ("GET", "/_ping")),
    ],
)
def test_plain_pings_qualify(data: bytes, expected: tuple[str, str]) -> None:
    assert parse_ping(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        request("POST", "/_ping", HOST),
        request("GET", "/_ping?x=1", HOST),
        request("GET", "/v1.51/_ping", HOST),  # 400 from the version middleware
        request("GET", "/v1.23/_ping", HOST),
        request("GET", "/v1.41/_pingx", HOST),
        request("GET", "/_ping", HOST, version=b"HTTP/1.0"),
        request("GET", "/_ping"),  # h11 refuses a missing Host
        request("GET", "/_ping", HOST, HOST),
        request("GET", "/_ping", HOST, b"Content-Length: 0\r\n"),
        request("GET", "/_ping", HOST, b"Transfer-Encoding: chunked\r\n"),
        request("GET", "/_ping", HOST, b"Connection: close\r\n"),
        request("GET", "/_ping", HOST, b"Connection: Upgrade\r\nUpgrade: tcp\r\n"),
        request("GET", "/_ping", HOST, b"Expect: 100-continue\r\n"),
        request("GET", "/_ping", HOST, b"Bad Header: x\r\n"),
        request("GET", "/_ping", HOST, b"X-Folded: a\r\n  b\r\n"),
        request("GET", "/_ping", HOST, b"X-Ctl: a\x00b\r\n"),
        request("GET", "/_ping", HOST)[:-2],  # split across reads
        request("GET", "/_ping", HOST) * 2,  # pipelined
        b"",
    ],
)
def test_anything_else_is_left_to_h11(data: bytes) -> None:
    assert parse_ping(data) is None


def test_targets_are_every_supported_version() -> None:
    assert len(PING_TARGETS) == 1 + (50 - 24 + 1)
    assert b"/v1.24/_ping" in PING_TARGETS and b"/v1.50/_ping" in PING_TARGETS


def test_uvicorn_internals_it_relies_on() -> None:
    assert "default_headers" in vars(ServerState())
    assert callable(H11Protocol.on_response_complete)
    assert callable(H11Protocol._unset_keepalive_if_required)
    assert FlowControl(cast(Any, None)).write_paused is False
    conn = h11.Connection(h11.SERVER)
    assert conn.our_state is h11.IDLE and conn.their_state is h11.IDLE
    assert conn.trailing_data == (b"", False)


# --------------------------------------------------------------------------------------------
# On a real server: same bytes as the ASGI route, same log line, keep-alive intact
# --------------------------------------------------------------------------------------------


class Server:
    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "api.sock")
        self.loop = asyncio.new_event_loop()
        self.server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="uvicorn-ping-test", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            services = Services(
                config=unused("config"),
                events=unused("events"),
                system=unused("system"),
                images=unused("images"),
                containers=unused("containers"),
                execs=unused("execs"),
                volumes=unused("volumes"),
                networks=unused("networks"),
            )
            config = uvicorn.Config(
                create_app(services),
                uds=self.path,
                http=PingFastPathProtocol,
                lifespan="off",
                log_config=None,
            )
            self.server = uvicorn.Server(config)
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        assert self.server is not None
        serving = asyncio.ensure_future(self.server.serve())
        while not self.server.started and not serving.done():
            await asyncio.sleep(0.01)
        self._ready.set()
        await serving

    def start(self) -> None:
        self.thread.start()
        assert self._ready.wait(TIMEOUT), "uvicorn did not start"
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    directory = Path(tempfile.mkdtemp(prefix="skiff-ping-", dir="/tmp"))  # AF_UNIX paths are short
    try:
        srv = Server(directory)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def conn(server: Server) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(server.path)
    try:
        yield sock
    finally:
        sock.close()


def exchange(sock: socket.socket, data: bytes) -> list[bytes]:
    """Send ``data`` (one or more requests); read one complete response per request."""
    sock.sendall(data)
    methods = re.findall(rb"(?:^|\r\n\r\n)([A-Z]+) /", data)
    buf = b""
    out: list[bytes] = []
    while len(out) < len(methods):
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[: end + 4]
            match = re.search(rb"(?im)^content-length: *(\d+)\r$", head)
            assert match is not None, head
            total = len(head) + (0 if methods[len(out)] == b"HEAD" else int(match.group(1)))
            if len(buf) >= total:
                out.append(buf[:total])
                buf = buf[total:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} responses: {buf!r}"
        buf += chunk
    assert not buf
    return out


def wait_for_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "skiff.api"]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, lines
            return lines
        time.sleep(0.01)


def without_date(response: bytes) -> bytes:
    return re.sub(rb"(?m)^date: [^\r]*\r\n", b"date: -\r\n", response)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("target", ["/_ping", "/v1.41/_ping"])
def test_fast_path_bytes_and_log_equal_the_route(
    conn: socket.socket,
    method: str,
    target: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answered: list[bool] = []
    original = PingFastPathProtocol._answer_ping

    def counting(self: PingFastPathProtocol, data: bytes) -> bool:
        answered.append(original(self, data))
        return answered[-1]

    monkeypatch.setattr(PingFastPathProtocol, "_answer_ping", counting)
    with caplog.at_level(logging.INFO, logger="skiff.api"):
        (fast,) = exchange(conn, request(method, target, HOST))
        # Content-Length: 0 disqualifies the request: h11, VersionMiddleware and the route answer it.
        (routed,) = exchange(conn, request(method, target, HOST, b"Content-Length: 0\r\n"))
        # The routed request logs after its response is written, on the server's thread.
        lines = wait_for_lines(caplog, 2)
    assert answered == [True, False]
    assert without_date(fast) == without_date(routed)
    assert fast.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert (fast.endswith(b"\r\n\r\nOK")) == (method == "GET")
    for line in lines:
        assert re.fullmatch(rf"{method} {re.escape(target)} 200 \d+ms", line), line


def test_keep_alive_mixes_fast_and_routed_requests(conn: socket.socket) -> None:
    for _ in range(3):
        (res,) = exchange(conn, request("GET", "/_ping", HOST))
        assert res.endswith(b"OK")
    (res,) = exchange(conn, request("GET", "/plugins", HOST))
    assert res.startswith(b"HTTP/1.1 200 OK\r\n") and res.endswith(b"[]")
    (res,) = exchange(conn, request("GET", "/v1.51/_ping", HOST))
    assert res.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"client version 1.51 is too new" in res
    # Pipelined pings are left to h11, which answers them in order on the same connection.
    two = exchange(conn, request("GET", "/_ping", HOST) + request("HEAD", "/_ping", HOST))
    assert two[0].endswith(b"OK") and b"content-length: 0\r\n" in two[1]
    (res,) = exchange(conn, request("HEAD", "/_ping", HOST))
    assert b"content-length: 0\r\n" in res


def test_close_is_honoured(conn: socket.socket) -> None:
    (res,) = exchange(conn, request("GET", "/_ping", HOST, b"Connection: close\r\n"))
    assert res.endswith(b"OK")
    assert conn.recv(1) == b""  # the server closed the connection
