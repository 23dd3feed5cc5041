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
``extract-to-dir`` (put).
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import contextlib
import errno
import gzip
import io
import json
import lzma
import os
import queue
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
_CHUNK = 256 * 1024
_PIPE_DEPTH = 64  # request body chunks buffered between the loop and the extracting thread
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
    """The request body, fed from the event loop, read by the extracting thread (backpressure:
    the loop waits while the queue is full). ``done`` tells the feeder that nobody reads any more."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_PIPE_DEPTH)
        self._pending = b""
        self._eof = False
        self.done = threading.Event()

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        self._pending += item
        return True

    def head(self, size: int) -> bytes:
        while len(self._pending) < size and self._fill():
            pass
        return self._pending[:size]

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._fill():
            return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _put_wait(self, item: bytes | None) -> bool:
        while not self.done.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close_feed(self) -> None:
        """Wake a reader still waiting for data (the feeder gave up): it sees the end of the body."""
        self.done.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    async def feed(self, item: bytes | None) -> bool:
        """Hand over a chunk (None: end of body); False once the reader has finished."""
        if self.done.is_set():
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            return await asyncio.to_thread(self._put_wait, item)


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
    """Collects tar bytes into chunks of about _CHUNK for the response stream."""

    def __init__(self, emit: Emitter[PathStat | bytes]) -> None:
        self.emit = emit
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.emit(bytes(self.buf))
            self.buf.clear()


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
        rootfs = self.containers.bundles / c.id / "rootfs"
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
        try:
            with FsView(fd, overlays_for(c), writable=not c.host_config.get("ReadonlyRootfs")) as view:
                yield view
        finally:
            os.close(fd)

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
        pipe = _BodyPipe()

        def work() -> None:
            try:
                with _docker_errors(path, ref), self._view(c, write=True) as view:
                    dest = self._extraction_point(c, view, path)
                    owner = self._container_user(c, view) if copy_uid_gid else None
                    options = ExtractOptions(no_overwrite_dir_non_dir, owner)
                    extract_tar(view, dest, _decompressed(pipe), options)
            finally:
                pipe.done.set()

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
        self.containers.publish(c, "extract-to-dir")

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
