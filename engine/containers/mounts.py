"""A container's volumes, bind mounts and tmpfs mounts across its life: create, start, stop, rm.

At create (``register``) the mount requests become mount points in dockerd's order (daemon/volumes.go
registerMountPoints, then the anonymous ``Config.Volumes`` of the request and the image): volumes
of ``--volumes-from`` containers, ``Binds``, ``Mounts``, then one anonymous volume per declared
``VOLUME`` not otherwise mounted. Volumes are created (and referenced by the container) on the way,
and an empty volume mounted over image content is filled with it (copy-up, unless ``nocopy``),
reading the image through a temporary mount of the container's layers, as dockerd's populateVolumes
does at create. At start (``setup``) volume drivers mount what they need, missing ``-v`` host paths
are created as directories, shared/slave propagation is checked against the host mount, and the
OCI bind/tmpfs mounts are returned; ``teardown`` undoes the driver mounts when the container stops.
``remove`` drops the container's references and, for ``docker rm -v``, its anonymous volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs
from engine.containers import specmounts
from engine.containers.model import Container
from engine.volumes.mountspec import (
    MountPoint,
    go_clean,
    parse_bind,
    parse_mount,
    parse_volumes_from,
    read_write,
    tmpfs_data,
)
from storage import mount as kernel_mounts
from storage import volumecopy

if TYPE_CHECKING:
    from engine.containers.store import ContainerStore
    from engine.volumes.service import VolumeService
    from storage.layers import LayerStore

log = logging.getLogger("skiff.containers")

# dockerd's network files: a user mount on one of these replaces the daemon's file.
NETWORK_FILES = ("/etc/resolv.conf", "/etc/hostname", "/etc/hosts")


def duplicate(destination: str) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(f"Duplicate mount point: {destination}")


def bind_spec(
    destination: str, source: str, rw: bool, propagation: str, recursive: bool = True
) -> dict[str, Any]:
    """The OCI mount dockerd's WithMounts makes for a bind or a volume: rbind, ro, propagation."""
    options = ["rbind" if recursive else "bind"]
    if not rw:
        options.append("ro")
    if propagation:
        options.append(propagation)
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def with_network_files(
    mounts: Sequence[dict[str, Any]], files: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The container's mounts plus the hostname/hosts/resolv.conf binds it does not override."""
    taken = {m["destination"] for m in mounts}
    return [*mounts, *(f for f in files if f["destination"] not in taken)]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo_propagation(mountinfo: str, path: str) -> tuple[str, set[str]]:
    """(mount point, optional fields) of the mount holding ``path`` (longest matching mount point)."""
    best, fields = "", set()
    for line in mountinfo.splitlines():
        parts = line.split(" ")
        if len(parts) < 7:
            continue
        point = _unescape(parts[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            optional = parts[6 : parts.index("-")] if "-" in parts else []
            best, fields = point, {o.split(":", 1)[0] for o in optional}
    return best, fields


def check_propagation(source: str, propagation: str, mountinfo: str | None = None) -> None:
    """dockerd's ensureShared / ensureSharedOrSlave before a shared or slave bind."""
    if propagation not in ("shared", "rshared", "slave", "rslave"):
        return
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
    point, fields = parse_mountinfo_propagation(mountinfo, os.path.realpath(source))
    if propagation in ("shared", "rshared") and "shared" not in fields:
        raise errdefs.Internal(f"path {source} is mounted on {point} but it is not a shared mount")
    if propagation in ("slave", "rslave") and not fields & {"shared", "master"}:
        raise errdefs.Internal(f"path {source} is mounted on {point} but it is not a shared or slave mount")


def _prepare_bind_source(mp: MountPoint) -> None:
    if not mp.skip_mountpoint_creation:
        try:
            os.makedirs(mp.source, mode=0o755, exist_ok=True)
        except FileExistsError:
            pass  # a file: bound as a file
        except NotADirectoryError:
            pass
        except OSError as err:
            raise errdefs.Internal(f"error while creating mount source path '{mp.source}': {err}") from err
    check_propagation(mp.source, mp.propagation)


def _subpath(volume_path: Path, subpath: str) -> str:
    """A volume's ``Subpath``, which must exist and stay inside the volume."""
    joined = os.path.join(volume_path, subpath)
    real = os.path.realpath(joined)
    base = os.path.realpath(volume_path)
    if real != base and not real.startswith(base + "/"):
        raise errdefs.InvalidParameter(f"path {subpath} escapes the base {volume_path}")
    if not os.path.exists(real):
        raise errdefs.InvalidParameter(f"cannot access path {joined}: no such file or directory")
    return real


class ContainerMounts:
    def __init__(
        self, volumes: VolumeService | None, *, store: ContainerStore, layers: LayerStore, scratch: Path
    ) -> None:
        self.volumes = volumes
        self.store = store
        self.layers = layers
        self.scratch = scratch  # temporary mounts of a container's layers, for copy-up at create

    def _volumes(self) -> VolumeService:
        if self.volumes is None:
            raise errdefs.Internal("volumes are not available in this daemon")
        return self.volumes

    def volume_users(self, name: str) -> list[str]:
        """For the volume service: the containers whose mount points use volume ``name``."""
        return [
            c.id
            for c in self.store
            if any(m.get("Type") == "volume" and m.get("Name") == name for m in c.mount_points)
        ]

    # -- create --------------------------------------------------------------------

    async def register(self, c: Container, undo: AsyncExitStack) -> None:
        """Turn the create request's mounts into ``c.mount_points``; unwinds on failure."""
        hc = c.host_config
        tmpfs = hc.get("Tmpfs") or {}
        created: list[tuple[str, bool]] = []  # (volume, anonymous) referenced by this create
        undo.push_async_callback(self._unwind, c.id, created)
        points: dict[str, MountPoint] = {}
        taken: set[str] = set()
        for spec in hc.get("VolumesFrom") or ():
            for mp in self._volumes_from(c.id, str(spec), created):
                points[mp.destination] = mp
        for raw in hc.get("Binds") or ():
            mp = parse_bind(str(raw), str(hc.get("VolumeDriver") or ""))
            if mp.destination in taken or mp.destination in tmpfs:
                raise duplicate(mp.destination)
            if mp.type == "volume":
                await self._attach_volume(c.id, mp, created, {}, None)
            taken.add(mp.destination)
            points[mp.destination] = mp
        for cfg in hc.get("Mounts") or ():
            if not isinstance(cfg, dict):
                raise errdefs.InvalidParameter("invalid mount config: not an object")
            mp = parse_mount(cfg)
            if mp.destination in taken:
                raise duplicate(str(cfg.get("Target")))
            if mp.type == "volume":
                vol_opts = cfg.get("VolumeOptions") or {}
                options = (vol_opts.get("DriverConfig") or {}).get("Options") if vol_opts else None
                await self._attach_volume(c.id, mp, created, vol_opts.get("Labels"), options)
            taken.add(mp.destination)
            points[mp.destination] = mp
        anonymous = [
            d for d in dict.fromkeys(go_clean(str(v)) for v in sorted(c.config.get("Volumes") or {}))
            if d not in points and d not in tmpfs
        ]  # fmt: skip
        if anonymous or any(mp.type == "volume" and mp.copy_data for mp in points.values()):
            async with self._layers_mounted(c) as rootfs:
                for dest in anonymous:
                    st = await asyncio.to_thread(volumecopy.stat_in_root, rootfs, dest)
                    if st is not None and not stat.S_ISDIR(st.st_mode):
                        raise errdefs.Internal(
                            f"cannot mount volume over existing file, file exists {rootfs / dest.lstrip('/')}"
                        )
                    mp = MountPoint("volume", dest, copy_data=True)
                    await self._attach_volume(c.id, mp, created, {}, None, driver=hc.get("VolumeDriver"))
                    mp.mode = ""  # AddMountPointWithVolume: no mode for image/Config volumes
                    points[dest] = mp
                for mp in points.values():
                    if mp.type == "volume" and mp.copy_data:
                        await self._populate(c.id, mp, rootfs)
        c.mount_points = [mp.to_record() for mp in points.values()]

    def _volumes_from(self, cid: str, spec: str, created: list[tuple[str, bool]]) -> Iterable[MountPoint]:
        ref, mode = parse_volumes_from(spec)
        try:
            other = self.store.get(ref)
        except errdefs.EngineError as err:
            raise errdefs.InvalidParameter(err.message) from None
        for record in other.mount_points:
            m = MountPoint.from_record(record)
            cp = MountPoint(
                m.type, m.destination, rw=m.rw and read_write(mode), name=m.name, source=m.source,
                driver=m.driver, propagation=m.propagation, spec=dict(m.spec),
            )  # fmt: skip
            if cp.type == "volume":
                self._volumes().reference(cp.name, cid)
                created.append((cp.name, False))
            yield cp

    async def _attach_volume(
        self,
        cid: str,
        mp: MountPoint,
        created: list[tuple[str, bool]],
        labels: dict[str, str] | None,
        options: dict[str, str] | None,
        driver: str | None = None,
    ) -> None:
        volumes = self._volumes()
        vol = await volumes.create(
            mp.name or None,
            driver=driver or mp.driver or None,
            labels=labels or None,
            options=options,
            reference=cid,
        )
        mp.name, mp.driver, mp.source = vol["Name"], vol["Driver"], vol["Mountpoint"]
        created.append((mp.name, mp.anonymous))  # an anonymous volume is always a new one
        if not mp.mode:
            mp.mode = "z"  # dockerd's setBindModeIfNull for local volumes

    async def _populate(self, cid: str, mp: MountPoint, rootfs: Path) -> None:
        volumes = self._volumes()
        if await asyncio.to_thread(volumecopy.stat_in_root, rootfs, mp.destination) is None:
            return  # nothing there in the image: the volume is not even mounted (dockerd's order)
        ref = f"populate-{cid}"
        path = await volumes.mount(mp.name, ref)
        try:
            await asyncio.to_thread(volumecopy.copy_up, rootfs, mp.destination, path)
        except OSError as err:
            raise errdefs.Internal(f"failed to populate volume: {err}") from err
        finally:
            await volumes.unmount(mp.name, ref)

    @contextlib.asynccontextmanager
    async def _layers_mounted(self, c: Container) -> AsyncIterator[Path]:
        target = self.scratch / c.id
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        try:
            layer_mounts = await asyncio.to_thread(self.layers.snapshotter.mounts, c.snapshot_key)
            await asyncio.to_thread(kernel_mounts.mount_all, layer_mounts, target)
            try:
                yield target
            finally:
                await asyncio.to_thread(kernel_mounts.unmount, target)
        finally:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(target.rmdir)  # rmdir: never deletes through a mount

    async def _unwind(self, cid: str, created: list[tuple[str, bool]]) -> None:
        """A failed create: drop its references and the anonymous volumes it made."""
        if self.volumes is None:
            return
        for name, anonymous in reversed(created):
            self.volumes.release(name, cid)
            if anonymous:
                with contextlib.suppress(errdefs.EngineError):
                    await self.volumes.remove(name)

    # -- start / stop --------------------------------------------------------------

    async def setup(self, c: Container, undo: AsyncExitStack) -> list[dict[str, Any]]:
        """Mount what the container's mount points need; the OCI mounts to add to its spec."""
        undo.push_async_callback(self.teardown, c)
        spec: list[dict[str, Any]] = []
        for record in c.mount_points:
            mp = MountPoint.from_record(record)
            if mp.type == "volume":
                volumes = self._volumes()
                path = await volumes.mount(mp.name, f"{c.id}:{mp.destination}")
                subpath = str((mp.spec.get("VolumeOptions") or {}).get("Subpath") or "")
                source = await asyncio.to_thread(_subpath, path, subpath) if subpath else str(path)
                spec.append(bind_spec(mp.destination, source, mp.rw, mp.propagation))
                self._publish_mount(c, mp)
            elif mp.type == "bind":
                await asyncio.to_thread(_prepare_bind_source, mp)
                recursive = not (mp.spec.get("BindOptions") or {}).get("NonRecursive")
                spec.append(bind_spec(mp.destination, mp.source, mp.rw, mp.propagation, recursive))
            elif mp.type == "tmpfs":
                spec.extend(specmounts.tmpfs_mounts({mp.destination: tmpfs_data(mp)}))
        return spec

    async def teardown(self, c: Container) -> None:
        """After the container stopped (or failed to start): release the volumes' driver mounts."""
        if self.volumes is None:
            return
        for record in c.mount_points:
            if record.get("Type") != "volume":
                continue
            name, dest = str(record.get("Name")), str(record.get("Destination"))
            try:
                await self.volumes.unmount(name, f"{c.id}:{dest}")
            except errdefs.EngineError as err:
                log.warning("cannot unmount volume %s of %s: %s", name, c.short_id, err.message)
            self.volumes.publish(name, "unmount", {"container": c.id})

    def _publish_mount(self, c: Container, mp: MountPoint) -> None:
        self._volumes().publish(
            mp.name,
            "mount",
            {
                "container": c.id,
                "destination": mp.destination,
                "propagation": mp.propagation,
                "read/write": "true" if mp.rw else "false",
            },
        )

    def announce_view(self, c: Container) -> None:
        """dockerd's openContainerFS (docker cp) runs setupMounts, so each volume logs "mount"."""
        if self.volumes is None:
            return
        for record in c.mount_points:
            if record.get("Type") == "volume":
                self._publish_mount(c, MountPoint.from_record(record))

    def announce_view_closed(self, c: Container) -> None:
        """...and closing that view runs UnmountVolumes, which logs "unmount" for each."""
        if self.volumes is None:
            return
        for record in c.mount_points:
            if record.get("Type") == "volume":
                self.volumes.publish(str(record.get("Name")), "unmount", {"container": c.id})

    # -- remove --------------------------------------------------------------------

    async def remove(self, c: Container, remove_volumes: bool) -> None:
        """``docker rm [-v]``: after the record is gone, drop references; ``-v`` removes anonymous volumes."""
        if self.volumes is None:
            return
        for record in c.mount_points:
            mp = MountPoint.from_record(record)
            if mp.type != "volume":
                continue
            self.volumes.release(mp.name, c.id)
            if not remove_volumes or not mp.anonymous:
                continue
            try:
                await self.volumes.remove(mp.name)
            except errdefs.Conflict:
                pass  # still used by another container (--volumes-from): not an error, as in dockerd
            except errdefs.EngineError as err:
                log.warning("cannot remove volume %s of %s: %s", mp.name, c.short_id, err.message)
