"""``docker logs`` over json-file: tail across rotated files, since/until, timestamps, details, follow.

All file work runs in worker threads in bounded batches (decoding and filtering too); the loop
only yields. The files are opened under the writer's ``file_lock``, so no rotation falls between
opening ``.1`` and the current file; ``tail`` reads backwards block by block.
Semantics follow dockerd: ``tail`` counts entries of both streams before the stream filter;
``since`` is checked until the first entry at or after it (timestamps need not be monotonic);
the first entry after ``until`` ends the read, follow included; ``follow`` applies only while the
container's logger is open and ends when it closes or ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote_plus

from engine.containers.jsonlog import LogEntry, TimeParser, decode_entry, fixed_nano, gzip_extra
from engine.containers.logs import JsonFileLogger, active_logger

_T = TypeVar("_T")
_BLOCK = 64 * 1024
_BATCH = 256 * 1024


async def read_logs(
    path: Path,
    *,
    stdout: bool,
    stderr: bool,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tail: int | None = None,
    timestamps: bool = False,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    details: bool = False,
    logger: JsonFileLogger | None = None,
) -> AsyncGenerator[tuple[str, bytes], None]:
    """Yield ``(stream, payload)``; payload is the entry's text with the optional prefixes.

    ``logger`` defaults to the writer registered for ``path`` (see ``logs.active_logger``).
    Use it with ``contextlib.aclosing`` so open files are released when the client goes away.
    """
    batches = read_log_batches(
        path,
        stdout=stdout,
        stderr=stderr,
        since_ns=since_ns,
        until_ns=until_ns,
        tail=tail,
        timestamps=timestamps,
        follow=follow,
        stop=stop,
        details=details,
        logger=logger,
    )
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for item in batch:
                yield item


async def read_log_batches(
    path: Path,
    *,
    stdout: bool,
    stderr: bool,
    since_ns: int | None = None,
    until_ns: int | None = None,
    tail: int | None = None,
    timestamps: bool = False,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    details: bool = False,
    logger: JsonFileLogger | None = None,
) -> AsyncGenerator[list[tuple[str, bytes]], None]:
    """``read_logs`` a batch at a time (what one worker-thread read produced; never empty).

    Writers to a socket send a batch in one write: per entry, 100k lines cost 100k sends.
    """
    writer = logger if logger is not None else active_logger(path)
    live = follow and writer is not None and not writer.closed
    emit = _Emitter(stdout, stderr, since_ns, until_ns, timestamps, details)
    session = _Session()
    try:
        snap = await asyncio.to_thread(session.call, session.open, path, writer, tail, since_ns)
        history = _RegionReader(snap.regions)
        while True:
            chunk, stopped = await asyncio.to_thread(session.call, _pull, history.next_batch, emit)
            if chunk:
                yield chunk
            if stopped or (stop is not None and stop.is_set()):
                return
            if not chunk and history.done:
                break
        if not live or writer is None:
            return
        session.cursor = _FollowCursor(path, writer, snap.detach_current(), snap.current_end, snap.epoch)
        async for batch in _follow(writer, session, emit, stop):
            yield batch
    finally:
        session.close()


async def _follow(
    writer: JsonFileLogger, session: _Session, emit: _Emitter, stop: asyncio.Event | None
) -> AsyncGenerator[list[tuple[str, bytes]], None]:
    assert session.cursor is not None
    read_new = session.cursor.read_new
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    waiter: asyncio.Future[int] | None = None
    try:
        while stop is None or not stop.is_set():
            # Read the state first: a flush after this point bumps the generation and wakes us.
            closed, generation = writer.closed, writer.generation
            chunk, stopped = await asyncio.to_thread(session.call, _pull, read_new, emit)
            if chunk:
                yield chunk
            if stopped:
                return
            if chunk:
                continue
            if closed:
                return
            waiter = asyncio.ensure_future(writer.wait_new(generation))
            await asyncio.wait(
                [w for w in (waiter, stopper) if w is not None], return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
    finally:
        for task in (waiter, stopper):
            if task is not None:
                task.cancel()


class _SessionClosed(Exception):
    """The read was abandoned before this worker job started."""


class _Session:
    """Owns one read's open files and closes them once no worker thread is using them.

    A client that goes away cancels the read while a worker may still be inside ``pread``;
    closing under it could hand the descriptor number to another file. ``close`` never blocks
    the loop: if a worker holds the lock, that worker releases the files when it finishes.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.snap: _Snapshot | None = None
        self.cursor: _FollowCursor | None = None

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self.lock:
            if self.closed:
                raise _SessionClosed
            try:
                return fn(*args)
            finally:
                if self.closed:
                    self._release()

    def open(
        self, path: Path, writer: JsonFileLogger | None, tail: int | None, since_ns: int | None
    ) -> _Snapshot:
        self.snap = _take_snapshot(path, writer, tail, since_ns)
        return self.snap

    def close(self) -> None:
        self.closed = True
        if self.lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self.lock.release()

    def _release(self) -> None:
        if self.snap is not None:
            self.snap.close()
        if self.cursor is not None:
            self.cursor.close()


def _pull(read: Callable[[], list[LogEntry]], emit: _Emitter) -> tuple[list[tuple[str, bytes]], bool]:
    """Worker side: read one batch and filter/format it, so the loop only yields."""
    out: list[tuple[str, bytes]] = []
    while True:
        entries = read()
        if not entries:
            return out, False
        for entry in entries:
            item = emit(entry)
            if isinstance(item, _Stop):
                return out, True
            if item is not None:
                out.append(item)
        if out:
            return out, False


class _Stop:
    """Sentinel: an entry after ``until`` ends the read."""


_STOP = _Stop()


class _Emitter:
    def __init__(
        self,
        stdout: bool,
        stderr: bool,
        since_ns: int | None,
        until_ns: int | None,
        timestamps: bool,
        details: bool,
    ) -> None:
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        self.since_ns, self.until_ns = since_ns, until_ns
        self.timestamps, self.details = timestamps, details
        self.times = TimeParser()

    def __call__(self, entry: LogEntry) -> tuple[str, bytes] | _Stop | None:
        if self.since_ns is not None or self.until_ns is not None:
            ts = self.times.parse(entry.time)
            if ts is None:
                return None
            if self.since_ns is not None:
                if ts < self.since_ns:
                    return None
                self.since_ns = None
            if self.until_ns is not None and ts > self.until_ns:
                return _STOP
        if entry.stream not in self.streams:
            return None
        payload = entry.log
        if self.details:
            attrs = sorted((entry.attrs or {}).items())
            payload = (
                ",".join(f"{quote_plus(k)}={quote_plus(str(v))}" for k, v in attrs).encode() + b" " + payload
            )
        if self.timestamps:
            payload = fixed_nano(entry.time).encode() + b" " + payload
        return entry.stream, payload


@dataclass
class _Region:
    f: BinaryIO
    start: int
    end: int


@dataclass
class _Snapshot:
    regions: list[_Region] = field(default_factory=list)
    current: BinaryIO | None = None
    current_end: int = 0
    epoch: int = 0  # the writer's rotation count when ``current`` was opened
    files: list[BinaryIO] = field(default_factory=list)

    def detach_current(self) -> BinaryIO | None:
        current, self.current = self.current, None
        if current is not None:
            self.files.remove(current)
        return current

    def close(self) -> None:
        for f in self.files:
            f.close()
        self.files.clear()


def _rotated_files(path: Path) -> list[tuple[Path, bool]]:
    """``<name>.N`` / ``<name>.N.gz``, newest (N=1) first; the plain file wins while it is compressed."""
    pattern = re.compile(re.escape(path.name) + r"\.([0-9]+)(\.gz)?")
    found: dict[int, tuple[Path, bool]] = {}
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path.parent):
            m = pattern.fullmatch(name)
            if m and int(m.group(1)) > 0:
                gz = m.group(2) is not None
                if int(m.group(1)) not in found or found[int(m.group(1))][1]:
                    found[int(m.group(1))] = (path.parent / name, gz)
    return [found[i] for i in sorted(found)]


def _take_snapshot(
    path: Path, writer: JsonFileLogger | None, tail: int | None, since_ns: int | None
) -> _Snapshot:
    snap = _Snapshot()
    try:
        opened: list[tuple[BinaryIO, bool]] = []
        f: BinaryIO
        with _locked(writer):
            snap.epoch = writer.rotations if writer is not None else 0
            with contextlib.suppress(FileNotFoundError):
                snap.current = open(path, "rb")  # noqa: SIM115 - owned by the snapshot
                snap.files.append(snap.current)
                snap.current_end = os.fstat(snap.current.fileno()).st_size
            if tail != 0:
                for rotated, gz in _rotated_files(path):
                    with contextlib.suppress(FileNotFoundError):
                        f = open(rotated, "rb")  # noqa: SIM115
                        snap.files.append(f)
                        opened.append((f, gz))
        if tail == 0:
            return snap
        newest_first: list[_Region] = []
        remaining = tail
        candidates = ([(snap.current, False)] if snap.current is not None else []) + opened
        for f, gz in candidates:
            if gz:
                if since_ns is not None and _gz_before(f, since_ns):
                    continue
                f = _decompress(f)
                snap.files.append(f)
            end = snap.current_end if f is snap.current else os.fstat(f.fileno()).st_size
            if remaining is None:
                newest_first.append(_Region(f, 0, end))
                continue
            start, found = _tail_start(f, end, remaining)
            newest_first.append(_Region(f, start, end))
            remaining -= found
            if remaining <= 0:
                break
        snap.regions = newest_first[::-1]
        return snap
    except BaseException:
        snap.close()
        raise


def _locked(writer: JsonFileLogger | None) -> contextlib.AbstractContextManager[object]:
    return writer.file_lock if writer is not None else contextlib.nullcontext()


def _gz_before(f: BinaryIO, since_ns: int) -> bool:
    """dockerd's shortcut: a rotated .gz whose header says its last entry predates ``since`` is skipped."""
    extra = gzip_extra(f.read(4096))
    f.seek(0)
    try:
        last = json.loads(extra or b"").get("lastTime", "")
    except (ValueError, AttributeError):
        return False
    ts = TimeParser().parse(last) if isinstance(last, str) else None
    return ts is not None and ts < since_ns


def _decompress(f: BinaryIO) -> BinaryIO:
    tmp = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the snapshot, which closes it
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            shutil.copyfileobj(gz, tmp, _BLOCK * 16)
    except (OSError, EOFError):
        tmp.truncate(tmp.tell())  # a damaged archive yields what decompressed cleanly
    tmp.seek(0)
    return tmp


def _tail_start(f: BinaryIO, end: int, n: int) -> tuple[int, int]:
    """Offset where the last ``n`` newline-terminated lines of ``f[:end]`` begin, reading backwards."""
    fd, pos, seen = f.fileno(), end, 0
    while pos > 0:
        lo = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - lo, lo)
        i = len(block)
        while (i := block.rfind(b"\n", 0, i)) >= 0:
            seen += 1
            if seen == n + 1:
                return lo + i + 1, n
        pos = lo
    return 0, seen


class _RegionReader:
    def __init__(self, regions: list[_Region]) -> None:
        self.regions = regions
        self.index = 0
        self.offset = regions[0].start if regions else 0
        self.carry = b""

    @property
    def done(self) -> bool:
        return self.index >= len(self.regions)

    def next_batch(self) -> list[LogEntry]:
        while self.index < len(self.regions):
            region = self.regions[self.index]
            if self.offset >= region.end:
                self.index += 1
                self.carry = b""  # an unterminated fragment at the end of a file is not an entry
                if self.index < len(self.regions):
                    self.offset = self.regions[self.index].start
                continue
            data = os.pread(region.f.fileno(), min(_BATCH, region.end - self.offset), self.offset)
            if not data:
                self.offset = region.end
                continue
            self.offset += len(data)
            lines, self.carry = _split_lines(self.carry + data if self.carry else data)
            entries = _decode(lines)
            if entries:
                return entries
        return []


class _FollowCursor:
    """Reads entries appended after the snapshot, then the files of every later rotation in order.

    dockerd jumps straight to the new current file, skipping whole files when several rotations
    happen between two reads; here the writer's rotation count says which rotated files are newer
    than the one being read, and those are read first (as long as max-file kept them).
    """

    def __init__(
        self, path: Path, writer: JsonFileLogger, f: BinaryIO | None, offset: int, epoch: int
    ) -> None:
        self.path, self.writer = path, writer
        self.f, self.offset, self.epoch = f, offset, epoch
        self.live = f  # the file the writer appends to (the others are complete)
        self.backlog: list[BinaryIO] = []
        self.carry = b""

    def read_new(self) -> list[LogEntry]:
        while True:
            entries = self._read()
            if entries:
                return entries
            if self.f is not None and self.f is not self.live:
                self._advance()
                continue
            if self.writer.rotations == self.epoch:
                return []
            # The writer only appends to the new file after rotating, so once the old live file
            # has been read to its end nothing more will arrive there.
            if entries := self._read():
                return entries
            self._switch()

    def _switch(self) -> None:
        newer: list[tuple[BinaryIO, bool]] = []
        live: BinaryIO | None = None
        try:
            with self.writer.file_lock:  # rotation count and file names must agree
                rotations = self.writer.rotations
                for index in range(rotations - self.epoch - 1, 0, -1):
                    for name, gz in ((f"{self.path}.{index}", False), (f"{self.path}.{index}.gz", True)):
                        with contextlib.suppress(FileNotFoundError):
                            newer.append((open(name, "rb"), gz))  # noqa: SIM115 - owned by backlog
                            break
                with contextlib.suppress(FileNotFoundError):
                    live = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            backlog: list[BinaryIO] = []
            for f, gz in newer:
                if gz:
                    with f:
                        backlog.append(_decompress(f))
                else:
                    backlog.append(f)
        except BaseException:
            for f, _ in newer:
                f.close()
            if live is not None:
                live.close()
            raise
        self.close()
        self.epoch, self.live = rotations, live
        self.backlog = backlog + ([live] if live is not None else [])
        self._advance()

    def _advance(self) -> None:
        if self.f is not None and self.f is not self.live:
            self.f.close()
        self.f = self.backlog.pop(0) if self.backlog else self.live
        self.offset, self.carry = 0, b""

    def _read(self) -> list[LogEntry]:
        while self.f is not None:
            data = os.pread(self.f.fileno(), _BATCH, self.offset)
            if not data:
                break
            self.offset += len(data)
            lines, self.carry = _split_lines(self.carry + data if self.carry else data)
            if entries := _decode(lines):
                return entries
        return []

    def close(self) -> None:
        for f in {id(x): x for x in (self.f, self.live, *self.backlog) if x is not None}.values():
            f.close()
        self.f = self.live = None
        self.backlog = []


def _split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines, and the unterminated rest (a writer may be mid-append)."""
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], data
    return data[:cut].split(b"\n"), data[cut + 1 :]


def _decode(lines: list[bytes]) -> list[LogEntry]:
    return [e for e in map(decode_entry, lines) if e is not None]
