"""Hijacked connections (attach, exec start) on uvicorn's h11 protocol; see docs/hijack.md.

dockerd answers ``POST /containers/{id}/attach`` and ``POST /exec/{id}/start`` by taking over the
TCP/UNIX connection (Go's ``http.Hijacker``): it writes ``HTTP/1.1 101 UPGRADED`` itself and then
uses the socket as a raw duplex pipe, with stdin flowing in and (framed) output flowing out.
ASGI has no such operation, so this module adds one:

- ``DockerH11Protocol`` (pass it as ``uvicorn.Config(http=DockerH11Protocol)``; never let uvicorn
  pick httptools, which treats an Upgrade request's body as stdin) publishes
  ``scope["extensions"]["skiff.hijack"]`` in every HTTP scope. The value is a ``Hijack``
  callable that writes the response head and returns a ``HijackedConnection``.
- A route validates as usual (404, 409 and 422 are still ordinary JSON responses; on an
  ``Upgrade: tcp`` request the connection is closed after them) and then returns
  ``HijackResponse(session, tty=..., api_version=...)``, which hijacks and runs the session.

This is the ONLY module that touches uvicorn internals (uvicorn is pinned in pyproject.toml;
``api/tests/test_hijack.py`` asserts each of these, plus the rest of hijack.md §1's list, exists):

- ``send.__self__`` is the request's ``uvicorn.protocols.http.h11_impl.RequestResponseCycle``;
  on it: ``response_started``, ``response_complete``, ``disconnected``, ``on_response``,
  ``message_event``, ``keep_alive``;
- ``H11Protocol.__init__(config, server_state, app_state, _loop)`` and, on the protocol:
  ``app``, ``transport``, ``connections`` (``server_state.connections``, what graceful shutdown
  walks), ``cycle``, ``headers``, ``conn`` (h11's documented ``Connection.trailing_data``),
  ``_unset_keepalive_if_required()``, ``_unsupported_upgrade_warning()``, ``eof_received()``.

It also reads large chunked request bodies (``docker cp`` into a container, ``docker load``,
``docker build``) with ``api/chunked.py`` instead of h11, one body append per read rather than
one h11 event per chunk; h11 still parses the head, the last chunk, the trailers and anything
doubtful, so its state, keep-alive, pipelining and 400s stay as they were. That relies on:
``H11Protocol.handle_events()``, ``cycle.body`` / ``more_body`` (a ``bytes`` body is fine: uvicorn
only measures, extends and converts it), ``flow.pause_reading()`` with
``uvicorn.protocols.http.flow_control.HIGH_WATER_LIMIT``, and h11's documented
``Connection.receive_data()``, ``our_state``, ``their_state``, ``trailing_data``.

Not handled here: what the bytes mean (``api/stdcopy.py`` frames them), detach keys, TTY resize
and exit codes (the engine's session objects).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import re
import select
import struct
import termios
import time
from collections.abc import Awaitable, Callable, MutableSet, Sequence
from typing import Any, Protocol, cast

import h11
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.server import ServerState

from api.chunked import ChunkedBody
from api.headers import SERVER_HEADERS

__all__ = [
    "EXTENSION",
    "MULTIPLEXED_STREAM",
    "RAW_STREAM",
    "DockerH11Protocol",
    "Hijack",
    "HijackError",
    "HijackResponse",
    "HijackedConnection",
    "Session",
    "stream_content_type",
]

EXTENSION = "skiff.hijack"
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"

log = logging.getLogger("skiff.api")

# After the client has closed its write side the transport stops polling the socket, so a later
# full close is only noticed when a write fails. Silent sessions poll for POLLHUP instead.
HANGUP_POLL_INTERVAL = 0.5
# Budget for the client to read the response head before any stream bytes follow (pitfall 7).
HEAD_READ_TIMEOUT = 0.25
# How long shutdown() lets buffered output drain before it aborts the connection.
SHUTDOWN_GRACE = 1.0
CLOSE_TIMEOUT = 5.0
# Read backpressure: stop reading the socket above HIGH, resume below LOW (bytes buffered).
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024

# h11's end-of-head search (h11/_receivebuffer.py: blank_line_regex), which it skips for a read
# that starts with an empty line (and so does the chunked fast path).
_BLANK_LINE = re.compile(b"\n\r?\n", re.MULTILINE)
_NOT_A_HEAD = (b"", b"\r", b"\n")
# A longer head is left to h11 with its body.
MAX_HEAD = 64 * 1024
_HANGUP_EVENTS = select.POLLHUP | select.POLLERR | select.POLLNVAL
_INT = struct.Struct("i")


class HijackError(RuntimeError):
    """The connection can no longer be taken over (response already started or client gone)."""


class Hijack(Protocol):
    """The ``scope["extensions"]["skiff.hijack"]`` callable.

    Writes ``HTTP/1.1 101 UPGRADED`` + ``Content-Type: content_type`` + ``Connection: Upgrade`` +
    ``Upgrade: tcp`` when the request carried an ``Upgrade`` header, else ``HTTP/1.1 200 OK`` +
    ``Content-Type: application/vnd.docker.raw-stream`` (dockerd's legacy answer), then
    ``headers`` in the given order, and returns the raw connection. Raises ``HijackError``.
    """

    def __call__(self, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> HijackedConnection: ...


Session = Callable[["HijackedConnection"], Awaitable[None]]


def _upgrade_value(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"upgrade":
            return value.strip().lower()
    return None


def _asks_tcp_upgrade(headers: Sequence[tuple[bytes, bytes]] | None) -> bool:
    return headers is not None and _upgrade_value(headers) == b"tcp"


class HijackedConnection(asyncio.Protocol):
    """The raw duplex connection a session works on once the HTTP exchange is over.

    Reading (one reader at a time): ``read(n)`` returns up to ``n`` stdin bytes, ``b""`` once
    the client has closed its write side (half-close: output keeps flowing) or the connection
    is gone. Writing: ``write(data)`` then ``await drain()``; both raise ``ConnectionResetError``
    once the connection is closed. ``wait_hangup()`` returns when the client has gone away
    entirely (after a half-close a watchdog polls for POLLHUP every 0.5 s to notice that).

    Also usable outside a server, e.g. in tests:
    ``await loop.connect_accepted_socket(HijackedConnection, sock)``.
    """

    def __init__(self, connections: MutableSet[Any] | None = None) -> None:
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._read_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._eof = False
        self._closing = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._watchdog: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._head_read = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if self._connections is not None:
            self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake_reader()
        if len(self._buffer) > READ_HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        # Returning a falsy value makes asyncio close the socket; the client only closed its
        # write side (CloseWrite at stdin EOF, or at once when no stdin is attached) and is
        # still reading output.
        self._eof = True
        self._wake_reader()
        self._schedule_watchdog()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._eof = True
        if self._connections is not None:
            self._connections.discard(self)
        for timer in (self._watchdog, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._wake_reader()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- state --------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """The connection is gone (or closing): nothing more can be written."""
        return self._closing

    @property
    def at_eof(self) -> bool:
        """The client will send no more stdin (half-close or gone) and the buffer is empty."""
        return self._eof and not self._buffer

    # -- reading ------------------------------------------------------------------------------
    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of stdin; ``b""`` at EOF."""
        if n <= 0:
            return b""
        while not self._buffer and not self._eof:
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._reading_paused and len(self._buffer) <= READ_LOW_WATER:
            self._reading_paused = False
            if self._transport is not None and not self._closing:
                self._transport.resume_reading()
        return chunk

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    # -- writing ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closing or self._transport is None:
            raise ConnectionResetError(errno.ECONNRESET, "hijacked connection is closed")
        if data:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        while self._write_paused and not self._closing:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._closing:
            raise ConnectionResetError(errno.ECONNRESET, "hijacked connection is closed")

    # -- lifetime -----------------------------------------------------------------------------
    async def wait_hangup(self) -> None:
        """Return once the connection is gone: lost, closed, or found hung up by the watchdog."""
        await asyncio.shield(self._closed)

    async def wait_head_read(self, timeout: float = HEAD_READ_TIMEOUT) -> None:
        """Wait (at most ``timeout``) until the client has read everything written so far.

        docker-py parses the head through a buffered reader and then reads the raw socket under
        it, so stream bytes that share a ``recv()`` with the head are lost. On AF_UNIX,
        ``SIOCOUTQ`` counts bytes the peer has not read yet.
        """
        if self._head_read or self._transport is None:
            return
        self._head_read = True
        fd = self._fileno()
        deadline = self._loop.time() + timeout
        while not self._closing and self._loop.time() < deadline:
            if self._transport.get_write_buffer_size() == 0 and (fd is None or _unread_outgoing(fd) == 0):
                return
            await asyncio.sleep(0.001)

    def close(self) -> None:
        """Flush buffered output, then close (the session's normal end)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closing = True

    async def aclose(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """``close()`` and wait until the connection is gone; abort if flushing takes too long."""
        self.close()
        if self._transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        except TimeoutError:
            self._transport.abort()
            await asyncio.shield(self._closed)

    def shutdown(self) -> None:
        """Called by uvicorn's graceful shutdown (we are in ``server_state.connections``)."""
        self.close()
        if self._abort_timer is None and self._transport is not None and not self._closed.done():
            self._abort_timer = self._loop.call_later(SHUTDOWN_GRACE, self._transport.abort)

    def _begin(self, leftover: bytes, eof: bool) -> None:
        """Feed bytes the HTTP parser had already buffered, then start reading the socket."""
        if leftover:
            self.data_received(leftover)
        if eof:
            self.eof_received()
        elif not self._reading_paused and self._transport is not None:
            self._transport.resume_reading()

    # -- hangup watchdog ---------------------------------------------------------------------
    def _schedule_watchdog(self) -> None:
        if self._watchdog is None and not self._closed.done():
            self._watchdog = self._loop.call_later(HANGUP_POLL_INTERVAL, self._check_hangup)

    def _check_hangup(self) -> None:
        self._watchdog = None
        if self._closed.done() or self._transport is None:
            return
        fd = self._fileno()
        if fd is None:
            return  # not a socket we can poll: the next failing write will tell
        if _peer_hung_up(fd):
            # Linux sets POLLHUP on AF_UNIX only once both directions are shut, i.e. the
            # client closed the socket after its earlier half-close.
            self._transport.abort()
            return
        self._schedule_watchdog()

    def _fileno(self) -> int | None:
        if self._transport is None:
            return None
        sock = self._transport.get_extra_info("socket")
        if sock is None:
            return None
        fd = sock.fileno()
        return fd if isinstance(fd, int) and fd >= 0 else None


def _peer_hung_up(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP/POLLERR/POLLNVAL are reported whatever the mask
    return any(events & _HANGUP_EVENTS for _, events in poller.poll(0))


def _unread_outgoing(fd: int) -> int:
    try:
        raw = fcntl.ioctl(fd, termios.TIOCOUTQ, _INT.pack(0))  # SIOCOUTQ == TIOCOUTQ on Linux
    except OSError:
        return 0
    return int(_INT.unpack(raw)[0])


def _noop() -> None:
    pass


class DockerH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the ``skiff.hijack`` extension; see the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        inner = cast(ASGIApp, self.app)

        async def publishing_app(scope: Scope, receive: Receive, send: Send) -> None:
            await self._call_app(inner, scope, receive, send)

        self.app = cast(Any, publishing_app)
        self._eof_pending = False
        self._chunked: ChunkedBody | None = None

    def data_received(self, data: bytes) -> None:
        chunked = self._chunked
        if chunked is not None:
            self._unset_keepalive_if_required()
            self._feed_chunked(chunked, data)
            return
        head_end = self._chunked_head_end(data)
        if head_end:
            self._start_chunked(data, head_end)
            return
        super().data_received(data)

    # -- chunked request bodies (api/chunked.py) ----------------------------------------------
    def _chunked_head_end(self, data: bytes) -> int:
        """Where the head ends if ``data`` starts a chunked request the fast reader may take, else 0.

        Only a whole head that starts a read on an idle connection with nothing buffered
        qualifies: then h11 would split the head off right there too (its blank-line search).
        Upgrade (attach, exec start: the hijack reads h11's buffer) and Expect requests stay
        with h11 entirely.
        """
        conn = self.conn
        # States first: the search below must not run over every read of a large body.
        if conn.their_state is not h11.IDLE or conn.our_state is not h11.IDLE or data[:1] in _NOT_A_HEAD:
            return 0
        found = _BLANK_LINE.search(data, 0, MAX_HEAD)
        if found is None:
            return 0
        head = data[: found.end()].lower()
        if b"transfer-encoding" not in head or b"upgrade" in head or b"expect" in head:
            return 0
        if conn.trailing_data[0]:
            return 0
        return found.end()

    def _start_chunked(self, data: bytes, head_end: int) -> None:
        self._unset_keepalive_if_required()
        conn = self.conn
        conn.receive_data(data[:head_end])
        self.handle_events()
        if conn.their_state is h11.ERROR:
            return  # h11 refused the head (400 sent) and would not have read any further
        if conn.their_state is h11.SEND_BODY and any(
            name == b"transfer-encoding" for name, _ in self.headers
        ):
            # h11 accepted the head, so the body is chunked (it refuses any other coding).
            self._chunked = ChunkedBody()
            self._feed_chunked(self._chunked, data[head_end:])
            return
        conn.receive_data(data[head_end:])
        self.handle_events()

    def _feed_chunked(self, chunked: ChunkedBody, data: bytes) -> None:
        """What uvicorn does for h11's ``Data`` events, once per read instead of once per chunk."""
        parts: list[bytes | memoryview] = []
        handover = chunked.feed(data, parts)
        # Once the response is complete uvicorn drops the rest of the body as well.
        if parts and self.conn.our_state is not h11.DONE:
            cycle = self.cycle
            joined = b"".join(parts)  # a read that is all data: ``data`` itself, no copy
            body: bytes | bytearray = cycle.body
            if body:
                body += joined
            else:
                body = joined
            # A bytes body saves a copy: receive() hands out bytes(cycle.body), which for bytes is
            # the object itself, and uvicorn only ever measures, extends and converts the buffer.
            cycle.body = cast(bytearray, body)
            if len(body) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            cycle.message_event.set()
        if handover is not None:
            # The last chunk, or framing left to h11 (refused with a 400, or read by h11 itself).
            self._chunked = None
            self.conn.receive_data(handover)
            self.handle_events()

    async def _call_app(self, inner: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)
        if scope["type"] == "http" and isinstance(cycle, RequestResponseCycle):
            if _asks_tcp_upgrade(scope["headers"]):
                # An attach/exec start answered normally (404, 409, 422) must not leave the
                # connection to a client that is about to treat it as a raw stream.
                cycle.keep_alive = False
            bound: RequestResponseCycle = cycle
            # Captured now: a version-stripping middleware further in may rewrite the path.
            request_line = f"{scope['method']} {scope['path']}"
            started = time.monotonic()

            def hijack(content_type: str, headers: Sequence[tuple[str, str]] = ()) -> HijackedConnection:
                return self._hijack(bound, request_line, started, content_type, headers)

            scope["extensions"] = {**(scope.get("extensions") or {}), EXTENSION: hijack}
        await inner(scope, receive, send)

    def _unsupported_upgrade_warning(self) -> None:
        # "Unsupported upgrade request." would be logged for every attach and exec.
        if not _asks_tcp_upgrade(self.headers):
            super()._unsupported_upgrade_warning()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        # A client may half-close right after sending an attach request with its stdin; uvicorn
        # would close the socket and lose the stream. Keep it open for the hijack (or for the
        # error response, after which keep_alive=False closes it).
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and _asks_tcp_upgrade(self.headers):
            self._eof_pending = True
            return True
        super().eof_received()
        return None

    def _hijack(
        self,
        cycle: RequestResponseCycle,
        request_line: str,
        started: float,
        content_type: str,
        headers: Sequence[tuple[str, str]],
    ) -> HijackedConnection:
        transport = self.transport
        if cycle is not self.cycle or cycle.response_started or cycle.disconnected or transport.is_closing():
            raise HijackError("the connection can no longer be hijacked")
        leftover, closed = self.conn.trailing_data
        if self._chunked is not None:
            # A legacy (no Upgrade) attach with a chunked body, hijacked before its end: like
            # h11's buffer, hand over the framing bytes not yet understood.
            leftover = self._chunked.pending + leftover
            self._chunked = None

        # From here on uvicorn's send() is a no-op, run_asgi neither sends a 500 nor complains
        # about a missing response, no keep-alive timer starts and no next request is parsed.
        cycle.response_started = True
        cycle.response_complete = True
        cycle.disconnected = True
        cycle.on_response = _noop
        cycle.message_event.set()
        self._unset_keepalive_if_required()

        raw = HijackedConnection(self.connections)
        self.connections.discard(self)
        transport.set_protocol(raw)
        raw.connection_made(transport)

        if _upgrade_value(self.headers) is not None:
            status = 101
            lines = [
                "HTTP/1.1 101 UPGRADED",
                f"Content-Type: {content_type}",
                "Connection: Upgrade",
                "Upgrade: tcp",
            ]
        else:
            # dockerd's answer to pre-Upgrade clients: raw-stream whatever the framing.
            status = 200
            lines = ["HTTP/1.1 200 OK", f"Content-Type: {RAW_STREAM}"]
        lines += [f"{name}: {value}" for name, value in headers]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        # h11 paused reading after the Upgrade request (MIGHT_SWITCH_PROTOCOL), or after the
        # legacy request once stdin followed it; _begin resumes it.
        raw._begin(leftover, closed or self._eof_pending)

        # uvicorn's access log goes through the send() we just bypassed.
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("%s %d %.0fms", request_line, status, elapsed_ms)
        return raw


def stream_content_type(*, tty: bool, api_version: tuple[int, int]) -> str:
    """dockerd sends raw-stream for a TTY, and for everything before API 1.42."""
    if tty or api_version < (1, 42):
        return RAW_STREAM
    return MULTIPLEXED_STREAM


class HijackResponse(Response):
    """Take over the connection and run ``session(conn)`` on it.

    Returned by a route after validation. ``headers`` are written after the fixed head; the
    default is ``SERVER_HEADERS`` (what dockerd's exec start sends). dockerd's attach sends
    none, so the attach route passes ``headers=()``.

    Before the session runs the response waits (up to 250 ms) for the client to read the head.
    The session is cancelled if the client goes away; when it returns, the connection is
    flushed and closed. Without the extension (TestClient, httpx.ASGITransport, another server)
    it answers 500 ``{"message":"hijacking not supported"}``.
    """

    def __init__(
        self,
        session: Session,
        *,
        tty: bool,
        api_version: tuple[int, int],
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        self.session = session
        self.content_type = stream_content_type(tty=tty, api_version=api_version)
        self.head_headers: tuple[tuple[str, str], ...] = tuple(SERVER_HEADERS if headers is None else headers)
        super().__init__(status_code=101, media_type=self.content_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hijack = cast("Hijack | None", (scope.get("extensions") or {}).get(EXTENSION))
        if hijack is None:
            await JSONResponse({"message": "hijacking not supported"}, status_code=500)(scope, receive, send)
            return
        try:
            conn = hijack(self.content_type, self.head_headers)
        except HijackError:
            log.debug("client went away before %s %s was hijacked", scope.get("method"), scope.get("path"))
            return
        try:
            await conn.wait_head_read()
            await self._run(conn)
        finally:
            await conn.aclose()
        if self.background is not None:
            await self.background()

    async def _run(self, conn: HijackedConnection) -> None:
        task = asyncio.ensure_future(self.session(conn))
        hangup = asyncio.ensure_future(conn.wait_hangup())
        try:
            await asyncio.wait({task, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("hijacked session failed", exc_info=exc)
