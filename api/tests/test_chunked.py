"""api/chunked.py + DockerH11Protocol's chunked-body fast path, compared with h11's own path.

Every case feeds the same bytes, split into the same reads, to the real protocol and to the same
protocol with the fast path switched off (h11 reads the whole body, as before), on an in-memory
transport that stops delivering reads while the protocol has paused reading. What the app received
(bodies, disconnects), what went out on the wire and whether the connection closed must be equal;
each case also checks the expected outcome itself, so two equally wrong paths cannot pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import h11
import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.server import ServerState

from api.chunked import MALFORMED, MAX_PENDING, ChunkedBody
from api.hijack import EXTENSION, RAW_STREAM, DockerH11Protocol
from api.ping import PingFastPathProtocol

HOST = b"Host: docker\r\n"
INVALID = b"Invalid HTTP request received."


def head(
    target: str = "/v1.50/containers/c1/archive?path=/x", *headers: bytes, method: bytes = b"PUT"
) -> bytes:
    return b"%s %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n%s\r\n" % (
        method,
        target.encode(),
        HOST,
        b"".join(headers),
    )


def chunks(*parts: bytes, last: bytes = b"0\r\n\r\n") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + last


GET = b"GET /next HTTP/1.1\r\n" + HOST + b"\r\n"


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    received: list[tuple[str, bytes | str]] = field(default_factory=list)  # (path, body or "disconnect")
    written: bytearray = field(default_factory=bytearray)
    closed: bool = False
    paused: int = 0
    fast_reads: int = 0

    def observable(self) -> tuple[object, ...]:
        return (self.received, bytes(self.written), self.closed)


class Transport(asyncio.Transport):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome
        self.protocol: asyncio.Protocol | None = None
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.outcome.written += data

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.outcome.closed = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.outcome.paused += 1
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol


def make_app(outcome: Outcome) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.endswith("/early"):
            # Answers before reading the body: the rest of it must be dropped, not misparsed.
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            outcome.received.append((path, b""))
            return
        if path.endswith("/hijack"):
            # A legacy attach (no Upgrade) with a chunked body: the hijack takes over mid-body.
            conn = scope["extensions"][EXTENSION](RAW_STREAM)
            stdin = bytearray()
            while data := await conn.read():
                stdin += data
            outcome.received.append((path, bytes(stdin)))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome.received.append((path, "disconnect"))
                return
            body += message["body"]
            if path.endswith("/slow"):
                await asyncio.sleep(0)
            if not message.get("more_body"):
                break
        outcome.received.append((path, bytes(body)))
        answer = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest()[:16].encode())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


class SlowPath(DockerH11Protocol):
    """DockerH11Protocol without the fast path: h11 reads every body, as before."""

    def _chunked_head_end(self, data: bytes) -> int:
        return 0


class Counting(PingFastPathProtocol):
    def _feed_chunked(self, chunked: ChunkedBody, data: bytes) -> None:
        self.counted.fast_reads += 1
        super()._feed_chunked(chunked, data)

    counted: Outcome


async def _settle() -> None:
    for _ in range(8):
        await asyncio.sleep(0)


async def _run(cls: type[H11Protocol], reads: Sequence[bytes], burst: bool) -> Outcome:
    outcome = Outcome()
    config = uvicorn.Config(make_app(outcome), http=cls, lifespan="off", log_config=None)
    state = ServerState()
    protocol = cls(config, state, {}, asyncio.get_running_loop())
    if isinstance(protocol, Counting):
        protocol.counted = outcome
    transport = Transport(outcome)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    for data in reads:
        for _ in range(1000):
            if transport.reading or transport.closing:
                break
            await asyncio.sleep(0)
        assert transport.reading or transport.closing, "reading stayed paused"
        if transport.closing:
            break
        cast(asyncio.Protocol, transport.get_protocol()).data_received(data)
        if not burst:
            await _settle()
    await _settle()
    if not transport.closing:
        # The client goes away: an app still reading the body sees http.disconnect.
        transport.closing = True
        transport.get_protocol().connection_lost(None)
        await _settle()
    for task in list(state.tasks):
        task.cancel()
    return outcome


def run(cls: type[H11Protocol], reads: Sequence[bytes], *, burst: bool = False) -> Outcome:
    """Feed ``reads``; the app runs between them, or with ``burst`` only while reading is paused."""
    return asyncio.run(_run(cls, reads, burst))


def compare(reads: Sequence[bytes], *, burst: bool = False) -> Outcome:
    """Run both paths; they must agree. Returns the fast path's outcome for further checks."""
    slow = run(SlowPath, reads, burst=burst)
    fast = run(Counting, reads, burst=burst)
    assert fast.observable() == slow.observable()
    return fast


def splits(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))]


def ok_line(body: bytes) -> bytes:
    answer = b"%d %s" % (len(body), hashlib.sha256(body).hexdigest()[:16].encode())
    return b"content-length: %d\r\n\r\n%s" % (len(answer), answer)


# --------------------------------------------------------------------------------------------
# The reader alone
# --------------------------------------------------------------------------------------------


def test_reader_on_one_read() -> None:
    body: list[bytes | memoryview] = []
    rest = ChunkedBody().feed(chunks(b"hello", b" ", b"world") + GET, body)
    assert b"".join(body) == b"hello world"
    assert rest == b"0\r\n\r\n" + GET


def test_reader_byte_by_byte_keeps_partial_framing() -> None:
    data = chunks(b"ab", b"c" * 17, last=b"0;x=1\r\nT: v\r\n\r\n")
    reader, body = ChunkedBody(), cast(list[bytes | memoryview], [])
    rests = [reader.feed(data[i : i + 1], body) for i in range(data.index(b"0;"))]
    assert rests == [None] * len(rests)
    rests = [reader.feed(data[i : i + 1], body) for i in range(data.index(b"0;"), data.index(b"T:"))]
    # Once the last-chunk line is whole, it goes to h11 (and, from then on, all that follows).
    assert rests[:-1] == [None] * (len(rests) - 1) and rests[-1] == b"0;x=1\r\n"
    assert b"".join(body) == b"ab" + b"c" * 17


@pytest.mark.parametrize(
    ("framing", "expected"),
    [
        (b"5\r\nhelloXY", MALFORMED),  # no CRLF after the data
        (b"5\r\nhello\rX", MALFORMED),
        (b"5\r\nhello\n\r", MALFORMED),
        (b"g\r\n", b"g\r\n"),  # not a chunk size: h11 decides
        (b"5 ;x\r\nhello\r\n", b"5 ;x\r\nhello\r\n"),
        (b"1" * 21 + b"\r\n", b"1" * 21 + b"\r\n"),
        (b"5;a\nb\r\n", b"5;a\nb\r\n"),
        (b"1" * (MAX_PENDING + 1), b"1" * (MAX_PENDING + 1)),  # too long incomplete: h11's limit
    ],
)
def test_reader_leaves_doubtful_framing_to_h11(framing: bytes, expected: bytes) -> None:
    assert ChunkedBody().feed(framing, []) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"5\r\n",
        b"5;\r\n",
        b"5;name=value\r\n",
        b'5;a="b;c"\r\n',
        b"5 \t\r\n",
        b"5;x \r\n",
        b"0005\r\n",
        b"0" * 19 + b"5\r\n",
    ],
)
def test_reader_takes_what_h11_takes(line: bytes) -> None:
    body: list[bytes | memoryview] = []
    assert ChunkedBody().feed(line + b"hello\r\n0\r\n\r\n", body) == b"0\r\n\r\n"
    assert b"".join(body) == b"hello"
    reader = h11.Connection(h11.SERVER)
    reader.receive_data(head() + line + b"hello\r\n0\r\n\r\n")
    events = []
    while (event := reader.next_event()) is not h11.NEED_DATA:
        events.append(type(event))
        if isinstance(event, h11.EndOfMessage):
            break
    assert events == [h11.Request, h11.Data, h11.EndOfMessage]


def test_reader_uppercase_hex_and_big_chunk() -> None:
    data = bytes(range(256)) * 1200
    body: list[bytes | memoryview] = []
    framed = b"%X\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
    reader = ChunkedBody()
    rest = None
    for i in range(0, len(framed), 65536):
        rest = reader.feed(framed[i : i + 65536], body)
    assert b"".join(body) == data and rest == b"0\r\n\r\n"


# --------------------------------------------------------------------------------------------
# The protocol: fast path vs h11
# --------------------------------------------------------------------------------------------

UPLOAD = head() + chunks(b"a", b"bc", b"x" * 40, last=b"0;end=1\r\nX-Trailer: t\r\n\r\n")
UPLOAD_BODY = b"abc" + b"x" * 40
PATH = "/v1.50/containers/c1/archive"


def test_upload_in_one_read_then_keep_alive() -> None:
    fast = compare([UPLOAD, GET])
    assert fast.received == [(PATH, UPLOAD_BODY), ("/next", b"")]
    assert fast.written.count(b"HTTP/1.1 200 OK") == 2 and ok_line(UPLOAD_BODY) in fast.written
    assert fast.fast_reads == 1


@pytest.mark.parametrize("reads", splits(UPLOAD + GET), ids=lambda r: str(len(r[0])))
def test_every_split_of_the_framing(reads: list[bytes]) -> None:
    fast = compare(reads)
    assert fast.received == [(PATH, UPLOAD_BODY), ("/next", b"")]


@pytest.mark.parametrize("burst", [False, True])
def test_byte_by_byte(burst: bool) -> None:
    fast = compare([bytes([b]) for b in UPLOAD + GET], burst=burst)
    assert fast.received == [(PATH, UPLOAD_BODY), ("/next", b"")]


def test_pipelined_requests_after_the_body() -> None:
    second = head("/v1.50/containers/c1/archive?path=/y") + chunks(b"second")
    fast = compare([UPLOAD + second + GET])
    assert fast.received == [(PATH, UPLOAD_BODY), (PATH, b"second"), ("/next", b"")]
    assert fast.written.count(b"HTTP/1.1 200 OK") == 3


@pytest.mark.parametrize("seed", range(8))
def test_random_chunk_sizes_and_reads(seed: int) -> None:
    rng = random.Random(seed)
    parts = [rng.randbytes(rng.choice([1, 2, 3, 7, 100, 4096, 16384, 70000])) for _ in range(60)]
    data = head() + chunks(*parts) + GET
    reads, i = [data[:300]], 300  # the head in one read, as the docker CLI writes it
    while i < len(data):
        step = rng.choice([1, 5, 64, 1000, 65536, 262144])
        reads.append(data[i : i + step])
        i += step
    fast = compare(reads, burst=seed % 2 == 1)  # odd: reads pile up before the app reads them
    assert fast.received == [(PATH, b"".join(parts)), ("/next", b"")]
    assert fast.fast_reads > 0


def test_flow_control_pauses_above_the_high_water_mark() -> None:
    big = bytes(HIGH_WATER_LIMIT * 4)
    data = head("/v1.50/containers/c1/slow") + chunks(*[big[i : i + 8192] for i in range(0, len(big), 8192)])
    reads = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    slow, fast = run(SlowPath, reads), run(Counting, reads)
    assert fast.observable() == slow.observable()
    assert fast.received == [("/v1.50/containers/c1/slow", big)]
    assert fast.paused > 0 and slow.paused > 0


@pytest.mark.parametrize("cut", [1, 4, 20, 48, -30, -3])  # in sizes, data, footers, the trailers
def test_disconnect_mid_body(cut: int) -> None:
    end = len(head()) + cut if cut > 0 else len(UPLOAD) + cut
    fast = compare([UPLOAD[:end]])
    assert fast.received == [(PATH, "disconnect")]


def test_early_response_drops_the_rest_of_the_body() -> None:
    # More than the high-water mark after the response: kept, it would pause reading for good.
    data = head("/v1.50/containers/c1/early") + chunks(b"a" * 5000, b"b" * (3 * HIGH_WATER_LIMIT), b"c")
    fast = compare([data[:200], data[200:100_000], data[100_000:], GET])
    assert fast.received == [("/v1.50/containers/c1/early", b""), ("/next", b"")]
    assert b"HTTP/1.1 204" in fast.written and fast.written.count(b"HTTP/1.1 200 OK") == 1


@pytest.mark.parametrize(
    "framing",
    [
        b"g\r\n",
        b"\r\n",
        b"-1\r\n",
        b"0x5\r\nhello\r\n",
        b" 5\r\nhello\r\n",
        b"5 ;x\r\nhello\r\n",
        b"1" * 21 + b"\r\n",
        b"5;a\nb\r\nhello\r\n",
        b"5\r\nhelloXY",
        b"5\r\nhello\rX",
        b"5\r\nhello\n\r\n",
        b"2\r\nok\r\n5\r\nhello\r\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"1;" + b"e" * 20000,  # an incomplete chunk-size line beyond h11's limit
    ],
)
def test_malformed_framing_is_refused_like_h11(framing: bytes, caplog: pytest.LogCaptureFixture) -> None:
    data = head() + b"3\r\nabc\r\n" + framing
    for reads in ([data + GET], [data[:-1], data[-1:], GET]):
        with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
            fast = compare(reads)
        assert fast.written.startswith(b"HTTP/1.1 400 ") and INVALID in fast.written
        assert fast.closed
        assert fast.received == [(PATH, "disconnect")]
    assert "Invalid HTTP request received." in caplog.text


def test_long_incomplete_size_line_within_h11_limit_still_works() -> None:
    ext = b"1;" + b"e" * (MAX_PENDING * 3) + b"\r\nZ\r\n"
    data = head() + ext + chunks(b"after")
    fast = compare([data[:150], data[150:2000], data[2000:], GET])
    assert fast.received == [(PATH, b"Zafter"), ("/next", b"")]


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Not chunked, though the words appear: h11's content-length body.
        b"PUT /a HTTP/1.1\r\n" + HOST + b"X-Note: transfer-encoding\r\nContent-Length: 3\r\n\r\nabc",
        # Both framings: h11 decides (chunked wins).
        b"PUT /a HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks(b"xyz"),
        # Codings h11 refuses, and a head h11 refuses.
        b"PUT /a HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + chunks(b"xyz"),
        b"PUT /a HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks(b"xyz"),  # no Host
        b"PUT /a HTTP/1.1\r\n" + HOST + b"Bad Header: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks(b"x"),
        # Left to h11 entirely, and still read the same.
        b"PUT /a HTTP/1.1\r\n"
        + HOST
        + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks(b"e"),
        b"POST /a HTTP/1.1\r\n"
        + HOST
        + b"Connection: Upgrade\r\nUpgrade: tcp\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunks(b"u"),
        # Bare-LF line ends, HTTP/1.0, other methods.
        b"PUT /a HTTP/1.1\n"
        + HOST.replace(b"\r\n", b"\n")
        + b"Transfer-Encoding: chunked\n\n"
        + chunks(b"lf"),
        b"PUT /a HTTP/1.0\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + chunks(b"old"),
        b"POST /build HTTP/1.1\r\n" + HOST + b"transfer-encoding: CHUNKED\r\n\r\n" + chunks(b"ctx", b"t"),
        b"\r\nPUT /a HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n" + chunks(b"x"),
    ],
)
def test_other_heads_are_read_as_before(request_bytes: bytes) -> None:
    compare([request_bytes + GET])
    compare([request_bytes, GET])


HIJACKED = head("/v1.50/containers/c1/hijack", method=b"POST") + b"5\r\nhello\r\n3\r\nabc\r\n12;x\r\n"


@pytest.mark.parametrize(
    "cut", range(len(head("/v1.50/containers/c1/hijack", method=b"POST")), len(HIJACKED))
)
def test_hijack_mid_body_gets_what_h11_left(cut: int) -> None:
    # The session starts after the first read; what follows is raw stdin, as with h11.
    fast = compare([HIJACKED[:cut], HIJACKED[cut:] + b"stdin"])
    assert fast.written.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: " + RAW_STREAM.encode())
    assert fast.received[0][0] == "/v1.50/containers/c1/hijack"


def test_a_head_split_over_reads_leaves_the_body_to_h11() -> None:
    cut = UPLOAD.index(b"Transfer")
    fast = compare([UPLOAD[:cut], UPLOAD[cut:], GET])
    assert fast.received == [(PATH, UPLOAD_BODY), ("/next", b"")]
    assert fast.fast_reads == 0


def test_a_second_chunked_upload_on_the_same_connection() -> None:
    fast = compare([UPLOAD, UPLOAD, GET])
    assert fast.received == [(PATH, UPLOAD_BODY), (PATH, UPLOAD_BODY), ("/next", b"")]
    assert fast.fast_reads == 2


def test_uvicorn_and_h11_internals_it_relies_on() -> None:
    cycle_fields = RequestResponseCycle.__init__.__code__.co_names
    assert {"body", "message_event", "more_body"} <= set(cycle_fields)
    assert HIGH_WATER_LIMIT == 65536
    assert callable(H11Protocol.handle_events)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head())
    assert isinstance(conn.next_event(), h11.Request)
    assert conn.their_state is h11.SEND_BODY and conn.next_event() is h11.NEED_DATA


# --------------------------------------------------------------------------------------------
# On a real uvicorn (PingFastPathProtocol, temp UNIX socket, own thread)
# --------------------------------------------------------------------------------------------

TIMEOUT = 10.0


class LiveCounting(PingFastPathProtocol):
    fast_reads = 0  # class-wide: the server makes the instances

    def _feed_chunked(self, chunked: ChunkedBody, data: bytes) -> None:
        LiveCounting.fast_reads += 1
        super()._feed_chunked(chunked, data)


class LiveServer:
    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "api.sock")
        self.outcome = Outcome()
        self.changed = threading.Condition()
        self.server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="uvicorn-chunked-test", daemon=True)

    def _main(self) -> None:
        inner = make_app(self.outcome)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            try:
                await inner(scope, receive, send)
            finally:
                with self.changed:
                    self.changed.notify_all()

        config = uvicorn.Config(app, uds=self.path, http=LiveCounting, lifespan="off", log_config=None)
        self.server = uvicorn.Server(config)
        loop = asyncio.new_event_loop()
        try:
            serving = loop.create_task(self.server.serve())

            async def ready() -> None:
                while not self.server.started and not serving.done():  # type: ignore[union-attr]
                    await asyncio.sleep(0.01)
                self._ready.set()
                await serving

            loop.run_until_complete(ready())
        finally:
            self._ready.set()
            loop.close()

    def wait_received(self, count: int) -> list[tuple[str, bytes | str]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.outcome.received) >= count, TIMEOUT)
            return list(self.outcome.received)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    directory = Path(tempfile.mkdtemp(prefix="skiff-chunked-", dir="/tmp"))  # AF_UNIX paths are short
    srv = LiveServer(directory)
    try:
        srv.thread.start()
        assert srv._ready.wait(TIMEOUT) and srv.server is not None and srv.server.started
        yield srv
    finally:
        if srv.server is not None:
            srv.server.should_exit = True
        srv.thread.join(TIMEOUT)
        shutil.rmtree(directory, ignore_errors=True)
    assert not srv.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def sock(live: LiveServer) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(live.path)
    try:
        yield s
    finally:
        s.close()


def read_responses(s: socket.socket, count: int) -> list[bytes]:
    buf, out = b"", cast(list[bytes], [])
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            length = int(buf[: end + 4].lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(buf) >= end + 4 + length:
                out.append(buf[: end + 4 + length])
                buf = buf[end + 4 + length :]
                continue
        data = s.recv(65536)
        assert data, f"closed after {len(out)} responses: {buf!r}"
        buf += data
    assert not buf
    return out


def test_live_upload_keep_alive_and_pipelining(live: LiveServer, sock: socket.socket) -> None:
    rng = random.Random(5)
    payload = rng.randbytes(5 * 1024 * 1024 + 3)
    pieces = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
    before, seen = LiveCounting.fast_reads, len(live.outcome.received)
    upload = head() + chunks(*pieces)

    sent = threading.Thread(target=sock.sendall, args=(upload,))
    sent.start()
    first = read_responses(sock, 1)
    sent.join(TIMEOUT)
    assert first[0].startswith(b"HTTP/1.1 200 OK") and first[0].endswith(
        ok_line(payload).split(b"\r\n\r\n")[1]
    )
    assert LiveCounting.fast_reads - before > 10  # the body went through the fast reader

    sock.sendall(GET)  # keep-alive: the connection serves the next request
    assert read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200 OK")
    sock.sendall(UPLOAD + GET)  # pipelined behind a chunked body
    assert [r.split(b"\r\n")[0] for r in read_responses(sock, 2)] == [b"HTTP/1.1 200 OK"] * 2
    assert live.wait_received(seen + 4)[seen:] == [
        (PATH, payload),
        ("/next", b""),
        (PATH, UPLOAD_BODY),
        ("/next", b""),
    ]


def test_live_disconnect_mid_body(live: LiveServer, sock: socket.socket) -> None:
    seen = len(live.outcome.received)
    sock.sendall(head("/v1.50/containers/c2/archive") + b"10000\r\n" + b"z" * 30000)
    sock.close()
    assert live.wait_received(seen + 1)[seen:] == [("/v1.50/containers/c2/archive", "disconnect")]


def test_live_malformed_size_is_a_400_and_close(live: LiveServer, sock: socket.socket) -> None:
    sock.sendall(head() + b"3\r\nabc\r\nzz\r\n")
    answer = b""
    while data := sock.recv(65536):
        answer += data
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and INVALID in answer
