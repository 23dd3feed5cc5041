"""The exec routes on a REAL uvicorn (DockerH11Protocol, temp UNIX socket), engine on the FakeRuntime.

Hijacked routes cannot run on httpx.ASGITransport (hijack.md pitfall 15), so the server runs in a
thread with its own event loop; the fake containers are made on that loop (``Server.call``).
Clients are raw sockets (exact bytes), httpx over the socket and docker-py's APIClient.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import docker
import docker.errors
import httpx
import pytest
import uvicorn

from api.app import create_app
from api.headers import SERVER_HEADERS
from api.hijack import MULTIPLEXED_STREAM, RAW_STREAM, DockerH11Protocol
from api.stdcopy import STDERR, STDOUT, FrameDecoder
from api.tests.fakes import unused
from engine.containers.model import Container
from engine.tests.test_exec import Harness
from engine.wiring import Services

TIMEOUT = 10.0
T = TypeVar("T")


class Server:
    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "api.sock")
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.harness: Harness | None = None
        self.server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="uvicorn-exec-test", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.harness = Harness(self.directory)
            services = Services(
                config=cast(Any, None),
                events=self.harness.bus,
                system=cast(Any, None),
                images=cast(Any, None),
                containers=self.harness.containers,
                execs=self.harness.execs,
                volumes=unused("volumes"),
                networks=unused("networks"),
            )
            config = uvicorn.Config(
                create_app(services), uds=self.path, http=DockerH11Protocol, lifespan="off", log_config=None
            )
            self.server = uvicorn.Server(config)
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        assert self.server is not None and self.harness is not None
        serving = asyncio.ensure_future(self.server.serve())
        while not self.server.started and not serving.done():
            await asyncio.sleep(0.01)
        self._ready.set()
        await serving
        await self.harness.runtime.close()
        await asyncio.gather(*self.harness.containers._background, return_exceptions=True)

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

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (fake runtime objects belong to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def container(self, name: str) -> Container:
        assert self.harness is not None
        return self.call(self.harness.container(name))


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    directory = Path(tempfile.mkdtemp(prefix="skiff-exec-", dir="/tmp"))  # AF_UNIX paths are short
    try:
        srv = Server(directory)
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def ctr(server: Server) -> Container:
    return server.container("runner")


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(uds=server.path)
    with httpx.Client(transport=transport, base_url="http://docker", timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def connect(server: Server) -> Iterator[Callable[[], socket.socket]]:
    opened: list[socket.socket] = []

    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        opened.append(s)
        s.settimeout(TIMEOUT)
        s.connect(server.path)
        return s

    yield open_socket
    for s in opened:
        s.close()


def create_exec(http: httpx.Client, container: Container, cmd: list[str], **body: Any) -> str:
    payload = {"AttachStdout": True, "AttachStderr": True, "Cmd": cmd, **body}
    r = http.post(f"/containers/{container.id}/exec", json=payload)
    assert r.status_code == 201, r.text
    exec_id: str = r.json()["Id"]
    return exec_id


def start_request(exec_id: str, body: dict[str, Any], *, prefix: str = "", upgrade: bool = True) -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST {prefix}/exec/{exec_id}/start HTTP/1.1", "Host: docker", "Content-Type: application/json"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def read_head(s: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
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


def expected_head(content_type: str) -> bytes:
    lines = ["HTTP/1.1 101 UPGRADED", f"Content-Type: {content_type}", "Connection: Upgrade", "Upgrade: tcp"]
    lines += [f"{k}: {v}" for k, v in SERVER_HEADERS]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frames(data: bytes) -> list[tuple[int, bytes]]:
    decoder = FrameDecoder()
    out = decoder.feed(data)
    assert decoder.pending == 0
    return out


def joined(fr: list[tuple[int, bytes]], stream: int) -> bytes:
    return b"".join(d for s, d in fr if s == stream)


# --- create / inspect --------------------------------------------------------------------------------


def test_create_answers_201_with_the_id(http: httpx.Client, ctr: Container) -> None:
    r = http.post(f"/v1.50/containers/{ctr.name.lstrip('/')}/exec", json={"Cmd": ["true"]})
    assert r.status_code == 201 and r.headers["content-type"] == "application/json"
    assert r.content == json.dumps({"Id": r.json()["Id"]}, separators=(",", ":")).encode() + b"\n"
    assert len(r.json()["Id"]) == 64


def test_create_matches_keys_case_insensitively_and_errors_are_dockerds(
    http: httpx.Client, server: Server, ctr: Container
) -> None:
    r = http.post(f"/containers/{ctr.id}/exec", json={"cmd": ["echo", "x"], "attachstdout": True})
    assert r.status_code == 201
    doc = http.get(f"/exec/{r.json()['Id']}/json").json()
    assert doc["ProcessConfig"]["entrypoint"] == "echo" and doc["OpenStdout"] is True

    r = http.post(f"/containers/{ctr.id}/exec", json={"Cmd": []})
    assert (r.status_code, r.json()) == (400, {"message": "No exec command specified"})
    r = http.post("/containers/nope/exec", json={"Cmd": ["true"]})
    assert (r.status_code, r.json()) == (404, {"message": "No such container: nope"})
    r = http.post(f"/containers/{ctr.id}/exec", json={"Cmd": ["true"], "DetachKeys": "ctrl-x,zz"})
    assert (r.status_code, r.json()) == (500, {"message": "Invalid escape keys (ctrl-x,zz) provided"})
    r = http.post(f"/containers/{ctr.id}/exec", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"].startswith("invalid JSON")

    stopped = server.container("stopped")
    assert server.harness is not None
    server.call(server.harness.stop(stopped))
    r = http.post(f"/containers/{stopped.id}/exec", json={"Cmd": ["true"]})
    assert (r.status_code, r.json()) == (409, {"message": f"container {stopped.id} is not running"})


def test_inspect_has_dockerds_shape(http: httpx.Client, ctr: Container) -> None:
    exec_id = create_exec(http, ctr, ["sleep", "1"], AttachStderr=False, DetachKeys="ctrl-x,y", Tty=True)
    r = http.get(f"/exec/{exec_id}/json")
    assert r.status_code == 200
    assert list(r.json()) == [
        "ID", "Running", "ExitCode", "ProcessConfig", "OpenStdin", "OpenStderr", "OpenStdout",
        "CanRemove", "ContainerID", "DetachKeys", "Pid",
    ]  # fmt: skip
    assert r.json() == {
        "ID": exec_id,
        "Running": False,
        "ExitCode": None,
        "ProcessConfig": {"tty": True, "entrypoint": "sleep", "arguments": ["1"], "privileged": False},
        "OpenStdin": False,
        "OpenStderr": False,
        "OpenStdout": True,
        "CanRemove": False,
        "ContainerID": ctr.id,
        "DetachKeys": "GHk=",
        "Pid": 0,
    }
    r = http.get("/exec/nope/json")
    assert (r.status_code, r.json()) == (404, {"message": "No such exec instance: nope"})


def test_inspect_shows_the_user_only_when_set(http: httpx.Client, ctr: Container) -> None:
    exec_id = create_exec(http, ctr, ["true"], User="bob")
    assert http.get(f"/exec/{exec_id}/json").json()["ProcessConfig"]["user"] == "bob"


# --- start -------------------------------------------------------------------------------------------


def test_detached_start_is_an_empty_200(http: httpx.Client, ctr: Container) -> None:
    exec_id = create_exec(http, ctr, ["sh", "-c", "exit 4"])
    r = http.post(f"/exec/{exec_id}/start", json={"Detach": True})
    assert r.status_code == 200 and r.content == b"" and "content-type" not in r.headers
    deadline = time.monotonic() + TIMEOUT
    while (doc := http.get(f"/exec/{exec_id}/json").json())["Running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert doc["ExitCode"] == 4 and doc["Pid"] > 0
    r = http.post(f"/exec/{exec_id}/start", json={"Detach": True})
    assert (r.status_code, r.json()) == (409, {"message": f"Error: Exec command {exec_id} has already run"})


def test_hijacked_start_frames_output_and_exit_code_is_set_at_eof(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    s = connect()
    s.sendall(start_request(exec_id, {"Detach": False, "Tty": False}))
    head, rest = read_head(s)
    assert head == expected_head(MULTIPLEXED_STREAM)
    s.shutdown(socket.SHUT_WR)  # what the CLI does at once without -i (hijack.md pitfall 1)
    got = frames(read_to_eof(s, rest))
    assert joined(got, STDOUT) == b"out\n" and joined(got, STDERR) == b"err\n"
    # Straight after EOF, as the CLI does (hijack.md pitfall 5).
    doc = http.get(f"/exec/{exec_id}/json").json()
    assert (doc["Running"], doc["ExitCode"]) == (False, 5)


def test_hijacked_start_with_stdin_and_half_close(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["cat"], AttachStdin=True)
    s = connect()
    s.sendall(start_request(exec_id, {}) + b"abc")  # stdin in the same packet as the request
    _, rest = read_head(s)
    s.sendall(b"def")
    s.shutdown(socket.SHUT_WR)
    got = frames(read_to_eof(s, rest))
    assert joined(got, STDOUT) == b"abcdef"
    assert http.get(f"/exec/{exec_id}/json").json()["ExitCode"] == 0


def test_tty_start_is_raw_and_old_versions_say_raw_stream(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["echo", "hello"], Tty=True)
    s = connect()
    s.sendall(start_request(exec_id, {"Tty": True}))
    head, rest = read_head(s)
    assert head == expected_head(RAW_STREAM)
    assert read_to_eof(s, rest) == b"hello\n"

    exec_id = create_exec(http, ctr, ["echo", "old"])
    s = connect()
    s.sendall(start_request(exec_id, {}, prefix="/v1.41"))
    head, rest = read_head(s)
    assert head == expected_head(RAW_STREAM)  # before 1.42 the type says raw, the bytes are framed
    assert frames(read_to_eof(s, rest)) == [(STDOUT, b"old\n")]


def test_start_errors_before_the_hijack_are_json_then_close(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["true"])
    for target, body, status, message in [
        (exec_id, {"Detach": "yes"}, 400, None),
        ("nope", {}, 404, "No such exec instance: nope"),
    ]:
        s = connect()
        s.sendall(start_request(target, body))
        raw = read_to_eof(s)  # the server closes after the error (hijack.md pitfall 10)
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode())
        assert b"content-type: application/json" in head.lower()
        if message is not None:
            assert json.loads(payload) == {"message": message}
    # The body was refused before anything ran: the exec can still be started.
    assert http.post(f"/exec/{exec_id}/start", json={"Detach": True}).status_code == 200


def test_start_failures_after_the_hijack_are_written_to_stdout(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["nope"])
    s = connect()
    s.sendall(start_request(exec_id, {}))
    head, rest = read_head(s)
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
    got = frames(read_to_eof(s, rest))
    assert len(got) == 1 and got[0][0] == STDOUT
    assert b"executable file not found" in got[0][1] and got[0][1].endswith(b": unknown\r\n")
    assert http.get(f"/exec/{exec_id}/json").json()["ExitCode"] == 127

    s = connect()
    s.sendall(start_request(exec_id, {"Tty": True}))
    _, rest = read_head(s)
    assert read_to_eof(s, rest) == f"Error: Exec command {exec_id} has already run\r\n".encode()


# --- resize ------------------------------------------------------------------------------------------


def test_resize_before_start_is_200_and_bad_values_are_400(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["size"], Tty=True)
    r = http.post(f"/exec/{exec_id}/resize", params={"h": 24, "w": 91})
    assert r.status_code == 200 and r.content == b""
    s = connect()
    s.sendall(start_request(exec_id, {"Tty": True}))
    _, rest = read_head(s)
    assert read_to_eof(s, rest) == b"24 91\n"

    r = http.post(f"/exec/{exec_id}/resize", params={"h": "x", "w": 1})
    assert (r.status_code, r.json()) == (400, {"message": 'strconv.Atoi: parsing "x": invalid syntax'})
    r = http.post("/exec/nope/resize", params={"h": 1, "w": 1})
    assert (r.status_code, r.json()) == (404, {"message": "No such exec instance: nope"})


def test_console_size_from_the_start_body(
    http: httpx.Client, connect: Callable[[], socket.socket], ctr: Container
) -> None:
    exec_id = create_exec(http, ctr, ["size"], Tty=True)
    s = connect()
    s.sendall(start_request(exec_id, {"Tty": True, "ConsoleSize": [42, 150]}))
    _, rest = read_head(s)
    assert read_to_eof(s, rest) == b"42 150\n"


# --- docker-py ---------------------------------------------------------------------------------------


@pytest.fixture
def api_client(server: Server) -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=f"unix://{server.path}", version="1.50", timeout=TIMEOUT)
    try:
        yield client
    finally:
        client.close()


def test_docker_py_back_to_back_exec_runs(api_client: docker.APIClient, ctr: Container) -> None:
    # Output that shares a recv() with the 101 head is lost by docker-py (hijack.md pitfall 7).
    for i in range(30):
        exec_id = api_client.exec_create(ctr.id, ["echo", f"run {i}"])["Id"]
        assert api_client.exec_start(exec_id) == f"run {i}\n".encode()
        assert api_client.exec_inspect(exec_id)["ExitCode"] == 0


def test_docker_py_stream_demux_and_socket(api_client: docker.APIClient, ctr: Container) -> None:
    exec_id = api_client.exec_create(ctr.id, ["sh", "-c", "echo a; echo b >&2; exit 2"])["Id"]
    parts = list(api_client.exec_start(exec_id, stream=True, demux=True))
    assert b"".join(o for o, _ in parts if o) == b"a\n" and b"".join(e for _, e in parts if e) == b"b\n"
    assert api_client.exec_inspect(exec_id)["ExitCode"] == 2

    exec_id = api_client.exec_create(ctr.id, ["sh", "-c", "echo sock; exit 9"])["Id"]
    sock = api_client.exec_start(exec_id, socket=True)
    raw: socket.socket = sock._sock
    try:
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    finally:
        sock.close()
    assert frames(data) == [(STDOUT, b"sock\n")]
    assert api_client.exec_inspect(exec_id)["ExitCode"] == 9

    with pytest.raises(docker.errors.NotFound, match="No such exec instance: missing"):
        api_client.exec_start("missing")
    with pytest.raises(docker.errors.APIError) as exc:
        api_client.exec_create(ctr.id, [])
    assert exc.value.response.status_code == 400
