"""Stdio fan-out for a running container or exec, and the stdin side of an attach session.

``OutputBroadcaster``: the output pump publishes ``(stream, bytes)`` chunks read from the
runtime's pipes or pty. Sinks (the json-file logger) are fed synchronously, before any await, so
they can never miss or drop a chunk; their own ``drain()`` applies back-pressure to the pump
(the container then blocks on write, as under dockerd's default "blocking" log mode).
Subscribers (attach sessions) get a byte-bounded queue each. A full queue makes ``publish`` wait
for that reader; one that makes no progress for ``stall_timeout`` seconds is disconnected
(``dropped``) and the others carry on. Bounded memory, and a paused client cannot hold the
container hostage forever (dockerd would).

Exit ordering, all in ``close(after=record_exit)``: (1) sinks are closed, so the log file holds
every line (and its unterminated tail) before the exit is visible (dockerd closes the log driver
before SetStopped, so ``docker wait; docker logs`` sees the last line); (2) ``after`` records
ExitCode/Running=false; (3) only then do subscribers see end-of-stream (hijack.md pitfall 5: the
CLI reads the exit code right after the stream ends).

``StdinPump`` copies an attach connection into the process's stdin. As in dockerd
(container/stream/attach.go), detach keys are honoured only with a TTY; at client EOF the process
stdin is closed only for StdinOnce (always for exec) without a TTY, otherwise the session ends.

The engine stays HTTP-free: the API layer frames what it reads (``api/stdcopy.py``).
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from engine import errdefs
from engine.containers.logs import StreamName

Chunk = tuple[StreamName, bytes]
DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q
SUBSCRIBER_BYTES = 1 << 20
STALL_TIMEOUT = 10.0
# moby/term's names for the control characters, in code order (ctrl-@ = 0 … ctrl-_ = 31).
_CTRL_NAMES = ["ctrl-@", *(f"ctrl-{c}" for c in "abcdefghijklmnopqrstuvwxyz"), "ctrl-[", "ctrl-\\", "ctrl-]",
               "ctrl-^", "ctrl-_"]  # fmt: skip


class OutputSink(Protocol):
    """A consumer that must see every byte (the logger); closed by ``OutputBroadcaster.close``."""

    def write(self, stream: StreamName, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


class OutputSource(Protocol):
    async def read(self) -> bytes:
        """The next chunk; b"" at end of stream."""
        ...


class Subscription:
    """One attach session's view of the output: ``async for stream, data in sub``.

    Iteration ends at end-of-stream, when the broadcaster drops a stalled reader (``dropped``
    is then True and unread chunks are discarded), or after ``close()``.
    """

    def __init__(self, streams: frozenset[str], max_bytes: int) -> None:
        self.streams = streams
        self.max_bytes = max_bytes
        self.dropped = False
        self._items: deque[Chunk] = deque()
        self._bytes = 0
        self._ended = False
        self._readable = asyncio.Event()
        self._progress = asyncio.Event()
        self._on_close: Callable[[Subscription], None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self

    async def __anext__(self) -> Chunk:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._bytes -= len(item[1])
        self._progress.set()
        return item

    def close(self) -> None:
        """Unsubscribe (client went away); a producer waiting on this reader moves on."""
        self._finish()
        self._items.clear()
        if self._on_close is not None:
            self._on_close(self)

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    def _put(self, item: Chunk) -> None:
        self._items.append(item)
        self._bytes += len(item[1])
        self._readable.set()

    def _finish(self) -> None:
        self._ended = True
        self._readable.set()
        self._progress.set()

    def _drop(self) -> None:
        self.dropped = True
        self.close()


class OutputBroadcaster:
    """Fans a process's output out to sinks (never drop) and subscribers (bounded)."""

    def __init__(
        self, *, subscriber_bytes: int = SUBSCRIBER_BYTES, stall_timeout: float = STALL_TIMEOUT
    ) -> None:
        self._subscriber_bytes = subscriber_bytes
        self._stall_timeout = stall_timeout
        self._sinks: list[OutputSink] = []
        self._subs: list[Subscription] = []
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def add_sink(self, sink: OutputSink) -> None:
        self._sinks.append(sink)

    def subscribe(
        self, *, stdout: bool = True, stderr: bool = True, max_bytes: int | None = None
    ) -> Subscription:
        """A new reader; after ``close()`` it is already at end-of-stream."""
        streams = frozenset(s for s, on in (("stdout", stdout), ("stderr", stderr)) if on)
        sub = Subscription(streams, max_bytes or self._subscriber_bytes)
        if self._closed:
            sub._finish()
            return sub
        sub._on_close = self._remove
        self._subs.append(sub)
        return sub

    async def publish(self, stream: StreamName, data: bytes) -> None:
        if not data or self._closed:
            return
        async with self._lock:  # one chunk at a time keeps every reader's order identical
            for sink in self._sinks:
                sink.write(stream, data)
            waiting = []
            for sub in self._subs:
                if stream not in sub.streams:
                    continue
                if sub.full:
                    waiting.append(sub)
                else:
                    sub._put((stream, data))
            if waiting:
                await asyncio.gather(*(self._put_when_room(sub, (stream, data)) for sub in waiting))
            for sink in self._sinks:
                await sink.drain()

    async def pump(self, stream: StreamName, source: OutputSource) -> None:
        """Publish everything ``source`` yields until its end of stream (one task per stream)."""
        while chunk := await source.read():
            await self.publish(stream, chunk)

    async def close(self, after: Callable[[], Awaitable[None] | None] | None = None) -> None:
        """End of output: finish in-flight publishes, close sinks, run ``after``, end subscriptions.

        The monitor calls it once the output pumps have hit EOF, passing the step that records
        ExitCode/Running=false as ``after``; a client that sees the stream end always finds the
        exit status there, and the log file already complete.
        """
        async with self._lock:
            if self._closed:
                return
            self._closed = True
        for sink in self._sinks:
            await sink.close()
        if after is not None:
            result = after()
            if inspect.isawaitable(result):
                await result
        subs, self._subs = self._subs, []
        for sub in subs:
            sub._finish()

    async def _put_when_room(self, sub: Subscription, item: Chunk) -> None:
        # "Stays full": the timer restarts whenever the reader takes something.
        while sub.full and not sub.ended:
            sub._progress.clear()
            try:
                await asyncio.wait_for(sub._progress.wait(), self._stall_timeout)
            except TimeoutError:
                sub._drop()
                return
        if not sub.ended:
            sub._put(item)

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)


def parse_detach_keys(spec: str, *, for_exec: bool = False) -> bytes:
    """moby/term ``ToBytes`` with dockerd's error; ``""`` means the default (ctrl-p,ctrl-q).

    Attach answers a bad value with 400 "Invalid detach keys"; exec create with a plain error
    (500) "Invalid escape keys", as dockerd does.
    """
    if not spec:
        return DEFAULT_DETACH_KEYS
    codes = bytearray()
    for key in spec.split(","):
        if len(key.encode()) == 1:
            codes += key.encode()
        elif key in _CTRL_NAMES:
            codes.append(_CTRL_NAMES.index(key))
        elif key == "DEL":
            codes.append(127)
        elif for_exec:
            raise errdefs.Internal(f"Invalid escape keys ({spec}) provided")
        else:
            raise errdefs.InvalidParameter(f"Invalid detach keys ({spec}) provided")
    return bytes(codes)


class StdinResult(enum.Enum):
    STDIN_CLOSED = "stdin-closed"  # client EOF; process stdin closed; keep streaming output to exit
    EOF = "eof"  # client EOF; stdin left open; end this session's output (container keeps running)
    DETACHED = "detached"  # detach keys (TTY only); end the session, publish "detach"


class AttachConnection(Protocol):
    async def read(self, n: int) -> bytes:
        """Up to n bytes from the client; b"" once it half-closed."""
        ...


class StdinTarget(Protocol):
    """The process side (runtime ``Stdio`` has this shape)."""

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...


class StdinPump:
    """Client → process stdin, with server-side detach-key scanning across chunk boundaries."""

    def __init__(
        self,
        conn: AttachConnection,
        target: StdinTarget,
        *,
        tty: bool,
        stdin_once: bool,
        detach_keys: bytes = DEFAULT_DETACH_KEYS,
        read_size: int = 32 * 1024,
    ) -> None:
        self._conn, self._target = conn, target
        self._tty, self._stdin_once = tty, stdin_once
        self._keys = detach_keys or DEFAULT_DETACH_KEYS
        self._read_size = read_size
        self._held = b""  # a possible start of the detach sequence, not yet sent

    async def run(self) -> StdinResult:
        while True:
            try:
                data = await self._conn.read(self._read_size)
            except (ConnectionError, OSError):
                data = b""  # a reset client is an EOF as far as stdin goes
            if not data:
                return await self._at_eof()
            if self._tty:
                data, detached = self._scan(data)
                if detached:
                    await self._send(data)
                    return StdinResult.DETACHED
            if data and not await self._send(data):
                return await self._at_eof()

    def _scan(self, data: bytes) -> tuple[bytes, bool]:
        """Bytes safe to send now, and whether the detach sequence completed."""
        data = self._held + data
        self._held = b""
        at = data.find(self._keys)
        if at >= 0:
            return data[:at], True
        # Withhold the longest tail that could still grow into the sequence.
        for n in range(min(len(self._keys) - 1, len(data)), 0, -1):
            if data.endswith(self._keys[:n]):
                self._held = data[-n:]
                return data[:-n], False
        return data, False

    async def _send(self, data: bytes) -> bool:
        if not data:
            return True
        try:
            await self._target.write_stdin(data)
        except (ConnectionError, OSError):
            return False  # the process closed its stdin or exited
        return True

    async def _at_eof(self) -> StdinResult:
        if self._held:
            held, self._held = self._held, b""
            await self._send(held)  # an unfinished detach prefix was ordinary input after all
        if self._stdin_once and not self._tty:
            await self._target.close_stdin()
            return StdinResult.STDIN_CLOSED
        return StdinResult.EOF
