"""``docker cp``: stat, read and write paths of a container as the container sees them.

``HEAD``/``GET``/``PUT /containers/{id}/archive`` work on running and stopped containers alike. The
root is the running container's mounted rootfs, or for a stopped one a temporary overlay of its
layers: read-only for stat/get (its upper dir as the top lower layer, so a ``start`` meanwhile can
still mount it), read-write for put (under the container lock, which ``start`` also takes). The
temporary mount is detached right after its root is opened, so it disappears with the last
descriptor however the operation ends. On top of that root an ``FsView`` shows the container's
bind mounts and volumes (``Container.mount_points``) and its /etc/hosts, /etc/hostname and
/etc/resolv.conf, as dockerd's ``openContainerFS`` mounts them in its private namespace; every
path is resolved in that view (``storage.fsroot``), never on the host.

dockerd's texts and statuses (moby ``daemon/archive*.go``): a missing path is 404 ``Could not find
the file <path> in container <name>``; ``extraction point is not a directory``, ``mounted volume is
marked read-only`` and ``container rootfs is marked read-only`` are 400; everything else, including
a refused archive entry, is 500 with the Go error text. Events: ``archive-path`` (get),
``extract-to-dir`` (put), and each volume's ``mount``/``unmount`` around every view (stat too).
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import collections
import contextlib
import errno
import gzip
import io
import json
import lzma
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import zstandard

from engine import errdefs
from engine.containers import fsdiff
from engine.containers.model import Container
from engine.containers.userlookup import exec_user
from engine.images.streams import Emitter, iterate_in_thread
from storage import mount as mounts
from storage.fscopy import ExtractOptions, export_tar, extract_tar
from storage.fsroot import (
    ArchiveError,
    FsView,
    Node,
    Overlay,
    PathError,
    go_base,
    go_clean,
    go_file_mode,
    go_join,
    go_strerror,
    preserve_trailing,
    rfc3339_nano,
)

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

STAT_HEADER = "X-Docker-Container-Path-Stat"
_CHUNK = 256 * 1024  # tar bytes per response chunk (docker cp out)
_PIPE_BYTES = 8 << 20  # request body buffered between the loop and the extracting thread
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")
_MOUNTED_TYPES = ("bind", "volume")  # tmpfs mounts are not in dockerd's view either


@dataclass(frozen=True)
class PathStat:
    """dockerd's ``container.PathStat``; ``mode`` is a Go ``os.FileMode``."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def to_docker(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": self.link_target,
        }

    def header(self) -> str:
        """The ``X-Docker-Container-Path-Stat`` value: std base64 of Go's JSON encoding."""
        text = json.dumps(self.to_docker(), ensure_ascii=False, separators=(",", ":"))
        # encoding/json escapes these for HTML safety; clients decode either form, bytes differ.
        for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escaped)
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode()


def path_stat(view: FsView, path: str) -> tuple[Node, PathStat]:
    """``os.Lstat(path)`` in the view plus dockerd's linkTarget (every link followed in scope)."""
    try:
        node = view.lookup(path)
    except OSError as e:
        raise PathError("lstat", path, e.errno or 0) from None
    target = view.canonical(path) if node.is_link else ""
    st = node.st
    return node, PathStat(
        go_base(path), st.st_size, go_file_mode(st.st_mode), rfc3339_nano(st.st_mtime_ns), target
    )


def overlays_for(c: Container) -> list[Overlay]:
    """The container's mounts as dockerd's ``setupMounts`` gives them to its view, parents first."""
    found: list[Overlay] = []
    taken: set[str] = set()
    for mp in c.mount_points:
        source, dest = str(mp.get("Source") or ""), str(mp.get("Destination") or "")
        if not source or not dest or str(mp.get("Type") or "") not in _MOUNTED_TYPES:
            continue
        found.append(Overlay(dest, source, bool(mp.get("RW", True))))
        taken.add(go_clean(dest))
    writable = not c.host_config.get("ReadonlyRootfs")
    for dest, source in zip(_NETWORK_FILES, (c.resolv_conf_path, c.hostname_path, c.hosts_path), strict=True):
        if source and dest not in taken and os.path.exists(source):
            found.append(Overlay(dest, source, writable))
    # dockerd sorts by the number of path elements (stable), so parents are mounted first.
    return sorted(found, key=lambda o: len(go_clean("/" + o.destination).split("/")))


class _BodyPipe(io.RawIOBase):
    """The request body, fed from the event loop, read by the extracting thread.

    Backpressure: the feeder waits on the loop (no thread of its own, no hop per chunk) while
    _PIPE_BYTES are buffered, and is woken once the reader has taken half of them, so a slow
    disk costs one wake-up per few MiB rather than a worker-thread round trip per chunk.
    ``finish`` (the reader is done) makes the feeder stop; ``close_feed`` (the feeder gave up, or
    the body ended) shows the reader the end of the body.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._ended = False  # no more chunks will come
        self._reader_waiting = False
        self._feeder_waiting = False
        self._room = asyncio.Event()
        self._pending = b""
        self._off = 0  # how much of _pending has been read
        self.done = threading.Event()

    def readable(self) -> bool:
        return True

    # -- the reading (extracting) thread --------------------------------------------------------

    def _take(self) -> bytes | None:
        """The next chunk, waiting for one; None at the end of the body."""
        with self._cond:
            while not self._chunks:
                if self._ended:
                    return None
                self._reader_waiting = True
                try:
                    self._cond.wait()
                finally:
                    self._reader_waiting = False
            item = self._chunks.popleft()
            self._buffered -= len(item)
            if self._feeder_waiting and self._buffered <= _PIPE_BYTES // 2:
                self._feeder_waiting = False
                self._loop.call_soon_threadsafe(self._room.set)
            return item

    def _fill(self) -> bool:
        """Make unread bytes available (the next chunk, once _pending is used up); False at the end."""
        while self._off >= len(self._pending):
            item = self._take()
            if item is None:
                return False
            self._pending, self._off = item, 0
        return True

    def head(self, size: int) -> bytes:
        while len(self._pending) - self._off < size:
            item = self._take()
            if item is None:
                break
            self._pending, self._off = self._pending[self._off :] + item, 0
        return self._pending[self._off : self._off + size]

    def read1(self, size: int = -1) -> bytes:
        """At most ``size`` bytes of one chunk: the chunk object itself, uncopied, when it fits."""
        if not self._fill():
            return b""
        off = self._off
        if off == 0 and (size < 0 or size >= len(self._pending)):
            self._off = len(self._pending)
            return self._pending
        end = len(self._pending) if size < 0 else min(len(self._pending), off + size)
        self._off = end
        return self._pending[off:end]

    def readinto(self, buffer: Any) -> int:
        if not self._fill():
            return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending) - self._off)
        view[:n] = self._pending[self._off : self._off + n]
        self._off += n
        return n

    def finish(self) -> None:
        """The reader is done: a waiting feeder is released and every later feed is refused."""
        self.done.set()
        with self._cond:
            self._chunks.clear()
            self._buffered = 0
            self._feeder_waiting = False
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody feeds any more
            self._loop.call_soon_threadsafe(self._room.set)

    # -- the event loop -------------------------------------------------------------------------

    def close_feed(self) -> None:
        """No more chunks (the feeder gave up, or the body ended): the reader sees the end."""
        with self._cond:
            self._ended = True
            self._cond.notify()

    async def feed(self, item: bytes | None) -> bool:
        """Hand over a chunk (None: end of body); False once the reader has finished."""
        if item is None:
            self.close_feed()
            return not self.done.is_set()
        while not self.done.is_set():
            with self._cond:
                if self._buffered < _PIPE_BYTES:
                    self._chunks.append(item)
                    self._buffered += len(item)
                    if self._reader_waiting:
                        self._cond.notify()
                    return True
                self._room.clear()
                self._feeder_waiting = True
            await self._room.wait()
        return False


def _decompressed(pipe: _BodyPipe) -> BinaryIO:
    """dockerd's ``DecompressStream``: gzip, bzip2, xz and zstd by their magic, else plain."""
    head = pipe.head(6)
    raw = cast(BinaryIO, pipe)
    if head.startswith(b"\x1f\x8b\x08"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if head.startswith(b"BZh"):
        return cast(BinaryIO, bz2.BZ2File(raw))
    if head.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.LZMAFile(raw))
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


class _Chunks:
    """Collects tar bytes into chunks of about _CHUNK for the response stream.

    Every emitted chunk is a round trip to the event loop (the worker waits for the queue to take
    it), so the chunks are large; the pieces are joined once, not appended one by one.
    """

    def __init__(self, emit: Emitter[PathStat | bytes]) -> None:
        self.emit = emit
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            parts, self.parts, self.size = self.parts, [], 0
            self.emit(parts[0] if len(parts) == 1 else b"".join(parts))


@contextlib.contextmanager
def _docker_errors(path: str, ref: str) -> Iterator[None]:
    """File-system failures as dockerd reports them (os.IsNotExist -> 404, the rest 500)."""
    try:
        yield
    except errdefs.EngineError:
        raise
    except PathError as e:
        if e.errno == errno.ENOENT:
            raise errdefs.NotFound(f"Could not find the file {path} in container {ref}") from None
        raise errdefs.Internal(str(e)) from None
    except FileNotFoundError:
        raise errdefs.NotFound(f"Could not find the file {path} in container {ref}") from None
    except ArchiveError as e:
        raise errdefs.Internal(str(e)) from None
    except OSError as e:
        reason = go_strerror(e.errno) if e.errno else str(e)
        raise errdefs.Internal(f"{e.filename}: {reason}" if e.filename else reason) from None


class ContainerArchive:
    """The archive endpoints over the containers ``ContainerService`` owns (no state of its own)."""

    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    def _container(self, ref: str) -> Container:
        c = self.containers.get(ref)
        # dockerd's checkContainerFSAvailable: the RW layer may already be gone.
        if c.state.status == "removing":
            raise errdefs.Conflict(f"container {c.id} is being removed")
        if c.state.dead:
            raise errdefs.Conflict(f"container {c.id} is dead")
        return c

    def _open_root(self, c: Container, *, write: bool) -> int:
        """A directory descriptor of the container's root file system (see the module docstring)."""
        rootfs = self.containers.bundle(c.id).rootfs
        if c.id in self.containers.live and mounts.is_mounted(rootfs):
            return os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        snapshotter = self.containers.layers.snapshotter
        try:
            if write:
                layer_mounts = snapshotter.mounts(c.snapshot_key)
            else:
                layer_mounts = fsdiff.readonly_view(
                    snapshotter.upperdir(c.snapshot_key), snapshotter.lowerdirs(c.snapshot_key)
                )
        except errdefs.NotFound:
            raise errdefs.Internal(f"RWLayer of container {c.id} is unexpectedly nil") from None
        target = self.containers.bundles.parent / "archive" / f"{c.id}-{secrets.token_hex(4)}"
        target.mkdir(parents=True, mode=0o700)
        try:
            mounts.mount_all(layer_mounts, target)
            try:
                return os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            finally:
                mounts.detach(target)
        finally:
            with contextlib.suppress(OSError):
                target.rmdir()

    @contextlib.contextmanager
    def _view(self, c: Container, *, write: bool) -> Iterator[FsView]:
        fd = self._open_root(c, write=write)
        # Published from the worker thread: the bus is thread-safe, and the events then bracket
        # exactly the time the view is open, as dockerd's bracket its container FS view.
        self.containers.mounts.announce_view(c)
        try:
            with FsView(fd, overlays_for(c), writable=not c.host_config.get("ReadonlyRootfs")) as view:
                yield view
        finally:
            os.close(fd)
            self.containers.mounts.announce_view_closed(c)

    # -- HEAD -----------------------------------------------------------------------------------

    async def stat(self, ref: str, path: str) -> PathStat:
        c = self._container(ref)

        def work() -> PathStat:
            with _docker_errors(path, ref), self._view(c, write=False) as view:
                return path_stat(view, path)[1]

        async with self.containers.lock(c.id):
            return await asyncio.to_thread(work)

    # -- GET ------------------------------------------------------------------------------------

    async def get(self, ref: str, path: str) -> tuple[PathStat, AsyncIterator[bytes]]:
        """The stat (for the header) and the tar stream. Errors before the first byte are HTTP
        errors; the stream itself runs in a worker thread that owns the view until it ends."""
        c = self._container(ref)
        abs_path = preserve_trailing(go_join("/", path), path)

        def work(emit: Emitter[PathStat | bytes]) -> None:
            with _docker_errors(path, ref), self._view(c, write=False) as view:
                node, found = path_stat(view, abs_path)
                emit(found)
                out = _Chunks(emit)
                export_tar(view, node, go_base(abs_path), out.write)
                out.flush()

        async with self.containers.lock(c.id):
            stream = iterate_in_thread(work, maxsize=8)
            first = await anext(stream)
        assert isinstance(first, PathStat)
        self.containers.publish(c, "archive-path")
        return first, _tar_bytes(stream)

    # -- PUT ------------------------------------------------------------------------------------

    async def put(
        self,
        ref: str,
        path: str,
        body: AsyncIterator[bytes],
        *,
        copy_uid_gid: bool = False,
        no_overwrite_dir_non_dir: bool = False,
    ) -> None:
        """Extract the (possibly compressed) tar ``body`` into directory ``path``."""
        c = self._container(ref)
        pipe = _BodyPipe(asyncio.get_running_loop())

        def work() -> None:
            try:
                with _docker_errors(path, ref), self._view(c, write=True) as view:
                    dest = self._extraction_point(c, view, path)
                    owner = self._container_user(c, view) if copy_uid_gid else None
                    options = ExtractOptions(no_overwrite_dir_non_dir, owner)
                    extract_tar(view, dest, _decompressed(pipe), options)
                    # Before the view closes: dockerd logs it ahead of the volumes' "unmount".
                    self.containers.publish(c, "extract-to-dir")
            finally:
                pipe.finish()

        async with self.containers.lock(c.id):
            worker = asyncio.ensure_future(asyncio.to_thread(work))
            # Its error is re-raised below, or superseded by the body's own (a client gone).
            worker.add_done_callback(lambda t: t.cancelled() or t.exception())
            try:
                async for chunk in body:
                    if chunk and not await pipe.feed(chunk):
                        break
                await pipe.feed(None)
            finally:
                # However the body ends, the worker owns a read-write mount of the container:
                # it must be finished before the lock (which `start` waits for) is released.
                pipe.close_feed()
                await asyncio.shield(asyncio.wait([worker]))
            worker.result()

    @staticmethod
    def _extraction_point(c: Container, view: FsView, path: str) -> Node:
        # dockerd: filepath.EvalSymlinks (the last element too), then Lstat, then the checks.
        try:
            dest = view.lookup(go_join("/", path), follow=True)
        except OSError as e:
            raise PathError("lstat", go_join("/", path), e.errno or 0) from None
        if not dest.is_dir:
            raise errdefs.InvalidParameter("extraction point is not a directory")
        overlay = view.overlay_for(dest.path)
        if overlay is not None:
            if not overlay.writable:
                raise errdefs.InvalidParameter("mounted volume is marked read-only")
        elif c.host_config.get("ReadonlyRootfs"):
            raise errdefs.InvalidParameter("container rootfs is marked read-only")
        return dest

    @staticmethod
    def _container_user(c: Container, view: FsView) -> tuple[int, int] | None:
        """copyUIDGID: the owner the container's ``Config.User`` maps to in its own /etc/passwd."""
        user = str(c.config.get("User") or "")
        if not user:
            return None
        uid, gid, _ = exec_user(user, view.read_file("/etc/passwd"), view.read_file("/etc/group"))
        return uid, gid


async def _tar_bytes(stream: AsyncIterator[PathStat | bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            if isinstance(chunk, bytes):
                yield chunk
    finally:
        # Stop the worker (and release the view) as soon as the client is gone.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
