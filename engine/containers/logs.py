"""Docker's json-file log driver, writer side (``logread`` reads, ``logconfig`` parses options).

Writer. ``JsonFileLogger.write`` is synchronous and cheap: it splits a chunk into lines the way
dockerd's copier does (a line longer than 16 KiB, or the unterminated rest at close, becomes a
"partial" entry without its newline; the pieces of one partial line share the first piece's
time), encodes them (``jsonlog``) and queues them. A worker thread of a small dedicated pool
appends the queue to ``<id>-json.log`` and rotates (``max-size``/``max-file``, optional gzip),
so a slow disk never stalls the event loop; the pool is not the default executor, so image pulls
cannot starve logging. Nothing is dropped: ``drain()`` lets the output pump apply back-pressure
(as dockerd's default blocking mode does) once more than ``high_water`` bytes wait.

Readers cooperate through three things exposed here: ``file_lock`` (held while a batch is
appended or files rotate, dockerd's fsopMu), ``rotations`` (which rotated file is which) and
``generation``/``wait_new`` (followers sleep until the next flush instead of polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from engine.containers.jsonlog import TimeFormatter, datetime_to_ns, escape_json_bytes, gzip_with_extra
from engine.containers.logconfig import LogOptions

log = logging.getLogger(__name__)

StreamName = Literal["stdout", "stderr"]
PARTIAL_MAX = 16 * 1024  # dockerd copier's buffer: longer lines are split into partial entries
HIGH_WATER = 4 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_ZERO_TIME = "0001-01-01T00:00:00Z"

_pool: ThreadPoolExecutor | None = None
_active: weakref.WeakValueDictionary[str, JsonFileLogger] = weakref.WeakValueDictionary()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="skiff-logs")
    return _pool


def json_log_path(container_root: Path, container_id: str) -> Path:
    return container_root / f"{container_id}-json.log"


def active_logger(path: Path) -> JsonFileLogger | None:
    """The open writer of ``path`` in this process, if the container is running."""
    return _active.get(os.path.abspath(path))


@dataclass
class _Partial:
    pending: bytes = b""
    first_ns: int | None = None  # time of the first piece of an unfinished partial line


class JsonFileLogger:
    """Writes one container's stdout/stderr as json-file entries, with rotation.

    Loop-affine: call ``write`` from the event loop thread (or from plain synchronous code with no
    running loop, where writes go to disk inline).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_size: int | None = None,
        max_file: int = 1,
        compress: bool = False,
        attrs: Mapping[str, str] | None = None,
        high_water: int = HIGH_WATER,
    ) -> None:
        if max_file < 1 or (max_size is not None and max_size <= 0):
            raise ValueError("max_file must be >= 1 and max_size positive")
        self.path = path
        self.max_size, self.max_file = max_size, max_file
        self.compress = compress and max_file > 1 and max_size is not None
        self._high_water = high_water
        self._fd = os.open(path, _OPEN_FLAGS, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._partials: dict[StreamName, _Partial] = {"stdout": _Partial(), "stderr": _Partial()}
        self._fmt = TimeFormatter()
        attrs_part = b""
        if attrs:
            body = ",".join(
                f'"{escape_json_bytes(k.encode()).decode()}":"{escape_json_bytes(v.encode()).decode()}"'
                for k, v in sorted(attrs.items())
            )
            attrs_part = b'"attrs":{' + body.encode() + b"},"
        self._mid = {
            s: b'","stream":"' + s.encode() + b'",' + attrs_part + b'"time":"' for s in self._partials
        }
        # _lock guards the queue between the loop and the worker; _fileop_lock makes "write a batch"
        # and "rotate" atomic for readers taking a snapshot (dockerd's fsopMu).
        self._lock = threading.Lock()
        self._fileop_lock = threading.Lock()
        self._queue: deque[list[bytes]] = deque()
        self._pending = 0
        self._flushing = False
        self._flush_future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._event = asyncio.Event()
        self._closing = self._closed = False
        self._rotations = 0
        self.write_errors = 0
        _active[os.path.abspath(path)] = self

    @classmethod
    def from_options(
        cls, path: Path, options: LogOptions, attrs: Mapping[str, str] | None = None
    ) -> JsonFileLogger:
        return cls(path, max_size=options.max_size, max_file=options.max_file, compress=options.compress,
                   attrs=attrs)  # fmt: skip

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generation(self) -> int:
        """Bumped after every flush to disk and at close; pair with ``wait_new``."""
        return self._generation

    @property
    def pending_bytes(self) -> int:
        return self._pending

    @property
    def rotations(self) -> int:
        """Rotations so far; ``.k`` is the file that was current ``k`` rotations ago. Read under file_lock."""
        return self._rotations

    @property
    def file_lock(self) -> threading.Lock:
        """Held while a batch is appended or the files rotate; readers take it to snapshot the files."""
        return self._fileop_lock

    def write(self, stream: StreamName, data: bytes, ts: datetime | None = None) -> None:
        if self._closing or not data:
            return
        now = datetime_to_ns(ts) if ts is not None else time.time_ns()
        part = self._partials[stream]
        buf = part.pending + data if part.pending else data
        entries: list[bytes] = []
        now_tail = b""
        start, end = 0, len(buf)
        while start < end:
            nl = buf.find(b"\n", start, start + PARTIAL_MAX)
            if nl >= 0:
                if part.first_ns is None:
                    tail = now_tail = now_tail or self._tail(stream, now)
                else:
                    tail, part.first_ns = self._tail(stream, part.first_ns), None
                entries.append(b"".join((b'{"log":"', escape_json_bytes(buf[start:nl]), b"\\n", tail)))
                start = nl + 1
            elif end - start >= PARTIAL_MAX:
                if part.first_ns is None:
                    part.first_ns = now
                entries.append(self._entry(stream, buf[start : start + PARTIAL_MAX], False, part.first_ns))
                start += PARTIAL_MAX
            else:
                break
        part.pending = buf[start:]
        if entries:
            self._enqueue(entries)

    async def drain(self) -> None:
        """Wait while more than ``high_water`` bytes are queued (back-pressure for the output pump)."""
        while self._pending > self._high_water and not self._closed:
            await self.wait_new(self._generation)

    async def flush(self) -> None:
        """Wait until everything written so far is in the file."""
        while True:
            with self._lock:
                busy = self._flushing
            if not busy or self._flush_future is None:
                return
            await asyncio.shield(self._flush_future)

    async def wait_new(self, generation: int) -> int:
        """Sleep until a flush or close has happened since ``generation`` was read."""
        while self._generation == generation and not self._closed:
            await self._event.wait()
        return self._generation

    async def close(self) -> None:
        """Flush unterminated lines as partial entries (the stream has ended), then close the file."""
        if self._closing:
            while not self._closed:
                await self.wait_new(self._generation)
            return
        self._closing = True
        now = time.time_ns()
        tails = [
            self._entry(s, p.pending, False, now if p.first_ns is None else p.first_ns)
            for s, p in self._partials.items()
            if p.pending
        ]
        if tails:
            self._enqueue(tails)
        await self.flush()
        with self._fileop_lock:
            os.close(self._fd)
        self._closed = True
        if _active.get(os.path.abspath(self.path)) is self:
            del _active[os.path.abspath(self.path)]
        self._bump()

    def _tail(self, stream: StreamName, ts_ns: int) -> bytes:
        return self._mid[stream] + self._fmt.format(ts_ns) + b'"}\n'

    def _entry(self, stream: StreamName, line: bytes, newline: bool, ts_ns: int) -> bytes:
        nl = b"\\n" if newline else b""
        return b"".join((b'{"log":"', escape_json_bytes(line), nl, self._tail(stream, ts_ns)))

    def _enqueue(self, entries: list[bytes]) -> None:
        size = sum(map(len, entries))
        with self._lock:
            self._queue.append(entries)
            self._pending += size
            if self._flushing:
                return
            self._flushing = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._drain_queue(inline=True)
            self._bump()
            return
        self._loop = loop
        self._flush_future = loop.run_in_executor(_executor(), self._drain_queue)

    def _bump(self) -> None:
        self._generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _drain_queue(self, inline: bool = False) -> None:
        """Worker: write queued batches until the queue is empty, waking followers after each."""
        while True:
            with self._lock:
                if not self._queue:
                    self._flushing = False
                    break
                batches = list(self._queue)
                self._queue.clear()
            written = sum(len(e) for b in batches for e in b)
            try:
                self._write_batches(batches)
            except OSError as exc:
                # dockerd logs the failure and carries on; the container must not block on a full disk.
                self.write_errors += 1
                log.error("json-file: writing %s failed: %s", self.path, exc)
            with self._lock:
                self._pending -= written
            if not inline and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed at interpreter exit
                    self._loop.call_soon_threadsafe(self._bump)

    def _write_batches(self, batches: list[list[bytes]]) -> None:
        if self.max_size is None:
            self._write_out([e for b in batches for e in b])
            return
        chunk: list[bytes] = []
        size = self._size
        for batch in batches:
            for entry in batch:
                if size >= self.max_size:
                    self._write_out(chunk)
                    self._rotate(chunk[-1] if chunk else None)
                    chunk, size = [], 0
                chunk.append(entry)
                size += len(entry)
        self._write_out(chunk)

    def _write_out(self, entries: list[bytes]) -> None:
        if not entries:
            return
        view = memoryview(b"".join(entries))
        with self._fileop_lock:
            while view:
                n = os.write(self._fd, view)
                self._size += n
                view = view[n:]

    def _rotate(self, last_entry: bytes | None) -> None:
        name = str(self.path)
        ext = ".gz" if self.compress else ""
        with self._fileop_lock:
            os.close(self._fd)
            # A follower may still be reading the current file, so it is renamed or unlinked,
            # never truncated in place.
            if self.max_file < 2:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{name}.{self.max_file - 1}{ext}")
                for i in range(self.max_file - 1, 1, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(f"{name}.{i - 1}{ext}", f"{name}.{i}{ext}")
                with contextlib.suppress(FileNotFoundError):
                    os.rename(name, f"{name}.1")
            self._fd = os.open(name, _OPEN_FLAGS | os.O_TRUNC, 0o640)
            self._size = 0
            self._rotations += 1
        if self.compress:
            self._compress(f"{name}.1", _entry_time(last_entry))

    @staticmethod
    def _compress(src: str, last_time: str) -> None:
        # The .gz is complete before the plain file goes, so readers (plain first) always find one.
        extra = json.dumps({"lastTime": last_time}, separators=(",", ":")).encode()
        try:
            with (
                open(src, "rb") as fin,
                open(os.open(src + ".gz", os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o640), "wb") as fout,
            ):
                gzip_with_extra(fin, fout, extra)
        except OSError as exc:
            log.error("json-file: compressing %s failed: %s", src, exc)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src + ".gz")
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(src)


def _entry_time(entry: bytes | None) -> str:
    if not entry:
        return _ZERO_TIME
    at = entry.rfind(b'"time":"')
    return entry[at + 8 : entry.rfind(b'"')].decode() if at >= 0 else _ZERO_TIME
