"""Container administration beside the lifecycle: list, inspect, rename, pause/unpause, update,
top, prune, diff and export, with dockerd's checks, texts and events.

``ContainerAdmin`` works on the records and live tasks ``ContainerService`` owns (its store,
``live`` map, per-container locks, ``publish`` and ``save``); it holds no container state itself
beyond the one-prune-at-a-time flag. Disk walks (sizes, diff, export) run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from engine import errdefs, ids
from engine.containers import filters as psfilters
from engine.containers import fsdiff, initlayer, top, update
from engine.containers.model import Container, parse_time
from engine.images.filters import FilterMap, match_kv, validate
from engine.images.streams import Emitter, iterate_in_thread
from engine.images.timestamps import get_timestamp
from runtime.cgroups import CgroupLayout, cgroups_path
from storage import mount as mounts
from storage.archive import export_tar

if TYPE_CHECKING:
    from engine.containers.service import ContainerService
    from storage.snapshots import OverlaySnapshotter

log = logging.getLogger("skiff.containers")

PRUNE_FILTERS = ("label", "label!", "until")
_EXPORT_CHUNK = 256 * 1024

PidLister = Callable[[Container], Awaitable[list[int]]]


@dataclass(frozen=True)
class Listed:
    """One ``docker ps`` row before rendering: the record, the image as shown, optional sizes."""

    container: Container
    image: str
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Inspected:
    container: Container
    graph_driver: dict[str, Any]
    exec_ids: list[str]
    size: tuple[int, int] | None = None


class _ChunkWriter:
    """File-like sink for tarfile's stream mode, handing out chunks of about _EXPORT_CHUNK bytes."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= _EXPORT_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._emit(chunk)


def _unix_ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def not_running(c: Container) -> errdefs.Conflict:
    return errdefs.Conflict(f"container {c.id} is not running")


def _restarting(c: Container) -> errdefs.Conflict:
    return errdefs.Conflict(f"Container {c.id} is restarting, wait until the container is running")


class ContainerAdmin:
    def __init__(
        self,
        containers: ContainerService,
        *,
        exec_ids: Callable[[str], list[str]] | None = None,
        pids_of: PidLister | None = None,
        ps: str = "ps",
    ) -> None:
        self.containers = containers
        self._exec_ids = exec_ids
        self._pids_of = pids_of or self._cgroup_pids
        self._ps = ps
        self._layout: CgroupLayout | None = None
        self._prune_running = False

    # --- lookups ---------------------------------------------------------------------------------

    @property
    def _snapshotter(self) -> OverlaySnapshotter:
        return self.containers.layers.snapshotter

    def _rw_size(self, c: Container) -> int:
        try:
            usage = self._snapshotter.usage(c.snapshot_key).size
            # dockerd keeps these in its -init layer, which SizeRw does not count.
            return max(0, usage - initlayer.artifact_bytes(self._snapshotter.upperdir(c.snapshot_key)))
        except (errdefs.EngineError, OSError):
            return 0

    def _sizes(self, c: Container) -> tuple[int, int]:
        """(SizeRw, SizeRootFs): the container layer, and that plus every image layer below it."""
        rw = self._rw_size(c)
        total = rw
        layers = self.containers.layers
        try:
            parent = self._snapshotter.stat(c.snapshot_key).parent
            while parent is not None:
                total += layers.size(parent)
                parent = self._snapshotter.stat(parent).parent
        except (errdefs.EngineError, OSError):
            pass
        return rw, total

    async def _image_shown(self, c: Container, cache: dict[str, str | None]) -> str:
        """refreshImage: Config.Image while it still names the container's image, else the image ID."""
        ref = str(c.config.get("Image") or "")
        if not ref or ref == c.image_id:
            return c.image_id
        if ref not in cache:
            try:
                cache[ref] = (await self.containers.images.resolve(ref)).id
            except errdefs.EngineError:
                cache[ref] = None
        return ref if cache[ref] == c.image_id else c.image_id

    async def _ancestors(self, values: list[str]) -> set[str]:
        """Image IDs for ``ancestor``: each named image and every image built on it."""
        images = self.containers.images
        children: Callable[[str], list[str]] | None = getattr(images, "children", None)
        found: set[str] = set()
        for value in values:
            try:
                image_id = (await images.resolve(value)).id
            except errdefs.EngineError:
                log.warning("Error while looking up for image %s", value)
                continue
            pending = [image_id]
            while pending:
                current = pending.pop()
                if current in found:
                    continue
                found.add(current)
                if children is not None:
                    pending.extend(await asyncio.to_thread(children, current))
        return found

    # --- list / inspect --------------------------------------------------------------------------

    async def list_containers(
        self, filters: FilterMap, *, all: bool = False, limit: int = 0, size: bool = False
    ) -> list[Listed]:
        parsed = psfilters.parse(filters)
        records = list(self.containers.store)
        before = since = None
        for value in parsed.values("before"):
            before = psfilters.find_ref(records, value)
        for value in parsed.values("since"):
            since = psfilters.find_ref(records, value)
        ancestors = await self._ancestors(list(parsed.values("ancestor"))) if "ancestor" in filters else None
        selection = psfilters.Selection(
            parsed, all=all, limit=limit, before=before, since=since, ancestors=ancestors
        )
        chosen = psfilters.select(records, selection)
        cache: dict[str, str | None] = {}
        rows = []
        for c in chosen:
            sizes = await asyncio.to_thread(self._sizes, c) if size else None
            rows.append(Listed(c, await self._image_shown(c, cache), sizes))
        return rows

    def _graph_driver(self, c: Container) -> dict[str, Any]:
        try:
            upper = Path(self._snapshotter.upperdir(c.snapshot_key))
            lowers = [str(p) for p in self._snapshotter.lowerdirs(c.snapshot_key)]
        except errdefs.EngineError:
            return {"Data": None, "Name": "overlay2"}
        data: dict[str, str] = {}
        if lowers:
            data["LowerDir"] = ":".join(lowers)
        data["MergedDir"] = str(self.containers.bundle(c.id).rootfs)
        data["UpperDir"] = str(upper)
        data["WorkDir"] = str(upper.parent / "work")
        return {"Data": data, "Name": "overlay2"}

    async def inspect(self, ref: str, *, size: bool = False) -> Inspected:
        c = self.containers.get(ref)
        graph = self._graph_driver(c)  # in-memory lookups only: no thread hop (docker exec inspects first)
        sizes = await asyncio.to_thread(self._sizes, c) if size else None
        exec_ids = list(self._exec_ids(c.id)) if self._exec_ids is not None else []
        return Inspected(c, graph, exec_ids, sizes)

    # --- rename ----------------------------------------------------------------------------------

    async def rename(self, ref: str, new_name: str) -> None:
        if not ref or not new_name:
            raise errdefs.InvalidParameter("Neither old nor new names may be empty")
        name = new_name if new_name.startswith("/") else "/" + new_name
        c = self.containers.get(ref)
        async with self.containers.lock(c.id):
            old = c.name
            if old == name:
                raise errdefs.InvalidParameter("Renaming a container with the same name as its current name")
            try:
                ids.validate_container_name(name)
                self.containers.store.rename(c, name)
            except errdefs.EngineError as e:
                raise type(e)(f"Error when allocating new name: {e.message}") from None
            if self.containers.networking is not None:  # the embedded DNS answers for the new name
                self.containers.networking.renamed(c)
        self.containers.publish(c, "rename", {"oldName": old})

    # --- pause / unpause -------------------------------------------------------------------------

    async def pause(self, ref: str) -> None:
        c = self.containers.get(ref)
        async with self.containers.lock(c.id):
            live = self.containers.live.get(c.id)
            if not psfilters.is_running(c) or (live is None and not c.state.restarting):
                raise not_running(c)
            if c.state.paused:
                raise errdefs.Conflict(f"Container {c.id} is already paused")
            if c.state.restarting or live is None:
                raise _restarting(c)
            try:
                await live.task.pause()
            except errdefs.EngineError as e:
                raise errdefs.Internal(f"Cannot pause container {c.id}: {e.message}") from None
            c.state.paused, c.state.status = True, "paused"
            for hook in self.containers.state_hooks:
                hook(c)
            self.containers.save(c)
        self.containers.publish(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.containers.get(ref)
        async with self.containers.lock(c.id):
            live = self.containers.live.get(c.id)
            if not c.state.paused or live is None:
                # dockerd returns this one untyped: a 500.
                raise errdefs.Internal(f"Container {c.id} is not paused")
            try:
                await live.task.resume()
            except errdefs.EngineError as e:
                raise errdefs.Internal(f"Cannot unpause container {c.id}: {e.message}") from None
            c.state.paused, c.state.status = False, "running"
            for hook in self.containers.state_hooks:
                hook(c)
            self.containers.save(c)
        self.containers.publish(c, "unpause")

    # --- update ----------------------------------------------------------------------------------

    async def update(self, ref: str, body: dict[str, Any]) -> list[str]:
        """``POST /containers/{id}/update``: persisted into HostConfig, applied live when running."""
        changes = update.normalize(body)
        update.validate(changes)
        c = self.containers.get(ref)
        async with self.containers.lock(c.id):
            if c.state.status == "removing" or c.state.dead:
                raise errdefs.Conflict(
                    f'Cannot update container {c.id}: container is marked for removal and cannot be "update"'
                )
            backup = dict(c.host_config)
            try:
                update.merge(c.host_config, changes)
                live = self.containers.live.get(c.id)
                if live is not None and psfilters.is_running(c) and not c.state.restarting:
                    await live.task.update(update.live_resources(c.host_config))
                self.containers.save(c)
            except errdefs.Conflict as e:
                c.host_config = backup
                raise errdefs.Conflict(f"Cannot update container {c.id}: {e.message}") from None
            except errdefs.EngineError as e:
                c.host_config = backup
                raise errdefs.Internal(f"Cannot update container {c.id}: {e.message}") from None
            except BaseException:
                c.host_config = backup
                raise
        self.containers.publish(c, "update")
        return []

    # --- top -------------------------------------------------------------------------------------

    async def _cgroup_pids(self, c: Container) -> list[int]:
        if self._layout is None:
            self._layout = await asyncio.to_thread(CgroupLayout.detect)
        pids = await asyncio.to_thread(top.cgroup_pids, self._layout, cgroups_path(c.id))
        if not pids and c.state.pid:
            pids = [c.state.pid]
        return pids

    async def top(self, ref: str, ps_args: str = "") -> dict[str, object]:
        args = ps_args or "-ef"
        top.validate_ps_args(args)
        c = self.containers.get(ref)
        if not psfilters.is_running(c):
            raise not_running(c)
        if c.state.restarting:
            raise _restarting(c)
        pids = await self._pids_of(c)
        output = await top.run_ps(args, pids, self._ps)
        result = top.parse_ps_output(output, pids)
        self.containers.publish(c, "top")
        return result

    # --- prune -----------------------------------------------------------------------------------

    async def prune(self, filters: FilterMap) -> dict[str, object]:
        if self._prune_running:
            raise errdefs.Conflict("a prune operation is already running")
        self._prune_running = True
        try:
            return await self._prune(filters)
        finally:
            self._prune_running = False

    async def _prune(self, filters: FilterMap) -> dict[str, object]:
        validate(filters, PRUNE_FILTERS)
        until_ns: int | None = None
        if "until" in filters:
            values = list(filters["until"])
            if len(values) > 1:
                raise errdefs.Internal("more than one until filter specified")
            until_ns = get_timestamp(values[0]).total_ns() if values else None
        deleted: list[str] = []
        reclaimed = 0
        for c in list(self.containers.store):
            if psfilters.is_running(c):
                continue
            created = parse_time(c.created)
            if until_ns is not None and created is not None and _unix_ns(created) > until_ns:
                continue
            if not match_kv(list(filters.get("label", ())), c.labels):
                continue
            if "label!" in filters and match_kv(list(filters["label!"]), c.labels):
                continue
            size = await asyncio.to_thread(self._rw_size, c)
            try:
                await self.containers.remove(c.id)
            except errdefs.EngineError as e:
                log.warning("prune: failed to remove %s: %s", c.id[:12], e.message)
                continue
            reclaimed += max(size, 0)
            deleted.append(c.id)
        self.containers.events.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    # --- diff ------------------------------------------------------------------------------------

    async def changes(self, ref: str) -> list[dict[str, object]] | None:
        c = self.containers.get(ref)
        try:
            upper = self._snapshotter.upperdir(c.snapshot_key)
            lowers = self._snapshotter.lowerdirs(c.snapshot_key)
        except errdefs.NotFound:
            raise errdefs.Internal(f"RWLayer of container {c.name.lstrip('/')} is unexpectedly nil") from None
        found = await asyncio.to_thread(fsdiff.changes, Path(upper), [Path(p) for p in lowers])
        # Go's nil slice: a container without changes answers `null`.
        return [ch.to_docker() for ch in found] or None

    # --- export ----------------------------------------------------------------------------------

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        """``docker export``: the container's whole filesystem as a tar, streamed from a worker thread.

        A running container's mounted rootfs is read in place; otherwise a read-only view of its
        layers is mounted under the exec root for the duration (by the worker, which also unmounts
        it however the stream ends). The first chunk is produced before returning, so a failure to
        mount is an HTTP error rather than a cut stream.
        """
        c = self.containers.get(ref)
        if c.state.dead:
            raise errdefs.Conflict(f"You cannot export container {c.id} which is Dead")
        if c.state.status == "removing":
            raise errdefs.Conflict(f"You cannot export container {c.id} which is being removed")
        live_rootfs = self.containers.bundle(c.id).rootfs
        scratch = self.containers.bundles.parent / "export"
        snapshotter = self._snapshotter

        def work(emit: Emitter[bytes]) -> None:
            writer = _ChunkWriter(emit)
            if c.id in self.containers.live and mounts.is_mounted(live_rootfs):
                export_tar(live_rootfs, cast(BinaryIO, writer))
                writer.flush()
                return
            view = fsdiff.readonly_view(
                snapshotter.upperdir(c.snapshot_key), snapshotter.lowerdirs(c.snapshot_key)
            )
            target = scratch / f"{c.id}-{secrets.token_hex(4)}"
            target.mkdir(parents=True, mode=0o700)
            try:
                mounts.mount_all(view, target)
                try:
                    export_tar(target, cast(BinaryIO, writer))
                    writer.flush()
                finally:
                    mounts.unmount(target)
            finally:
                with contextlib.suppress(OSError):
                    target.rmdir()

        stream = iterate_in_thread(work, maxsize=8)
        try:
            first = await anext(stream, b"")
        except errdefs.EngineError as e:
            raise errdefs.Internal(f"Error exporting container {ref}: {e.message}") from None
        except OSError as e:
            raise errdefs.Internal(f"Error exporting container {ref}: {e}") from None
        return self._exported(c, first, stream)

    async def _exported(self, c: Container, first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
        self.containers.publish(c, "export")
