"""Volumes with dockerd's ``local`` driver: create, inspect, list, remove, prune, mount and usage.

A volume is *in use* while a container references it: the containers that exist (asked through the
usage checker the container side registers, so the answer is derived from the container records and
survives a daemon restart) plus references taken by ``create(reference=...)`` for a container that
is still being created. References are released when that container is removed (``release``).

Driver options follow the local driver: ``type``/``device``/``o`` describe a mount (``type=tmpfs``,
``type=none,o=bind,device=/host/dir``, an NFS export ...) made on the volume's ``_data`` at its first
``mount`` and undone when the last user unmounts it, as dockerd does when containers start and stop.
``size`` (project quotas) is refused as on a dockerd without quota support. Every error text is
dockerd's (``create <name>: ...``, ``get <name>: no such volume``, ``remove <name>: volume is in
use - [<ids>]``) and events are dockerd's (create, mount, unmount, destroy, prune).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs
from engine.images.filters import bool_or_default, match_kv, validate
from storage import mount as mounts
from storage.volumes import VolumeRecord, VolumeStore

if TYPE_CHECKING:
    from engine.events import EventBus

log = logging.getLogger("skiff.volumes")

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LIST_FILTERS = ("dangling", "name", "driver", "label")
PRUNE_FILTERS = ("label", "label!", "all")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_RESTRICTED_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_VALID_OPTS = ("type", "o", "device", "size")
_REQUIRED_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kmgtp])?i?b?", re.IGNORECASE)
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # strconv.ParseBool
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

UsageChecker = Callable[[str], Iterable[str]]


def go_rfc3339(ns: int) -> str:
    """Go's ``time.Format(time.RFC3339)`` in the daemon's local zone: seconds, ``Z`` or ``±hh:mm``."""
    t = datetime.fromtimestamp(ns // 1_000_000_000).astimezone()
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    offset = int((t.utcoffset() or timedelta(0)).total_seconds())
    if offset == 0:
        return base + "Z"
    sign = "+" if offset > 0 else "-"
    offset = abs(offset)
    return f"{base}{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"


def validate_name(name: str) -> None:
    """The local driver's name rule; the caller adds the ``create <name>:`` prefix."""
    if len(name) == 1:
        raise errdefs.InvalidParameter(
            "volume name is too short, names should be at least two alphanumeric characters"
        )
    if not _NAME.fullmatch(name):
        raise errdefs.InvalidParameter(
            f'"{name}" includes invalid characters for a local volume name, only "{_RESTRICTED_CHARS}" '
            "are allowed. If you intended to pass a host directory, use absolute path"
        )


def validate_options(options: Mapping[str, str]) -> None:
    """The local driver's ``validateOpts`` plus its quota check (no quota support here)."""
    for key in options:
        if key not in _VALID_OPTS:
            raise errdefs.InvalidParameter(f'invalid option: "{key}"')
    for key in sorted(options):  # Go walks a map; sorted keeps the text stable
        for required in _REQUIRED_OPTS.get(key, ()):
            if required not in options:
                raise errdefs.InvalidParameter(f'missing required option: "{required}"')
    if "size" in options:
        m = _SIZE.fullmatch(options["size"])
        if m is None or m.group(1).count(".") > 1:
            raise errdefs.Internal(f"invalid size: '{options['size']}'")
        if float(m.group(1)) * _BINARY.get((m.group(2) or "").lower(), 1) >= 1:
            raise errdefs.InvalidParameter("quota size requested but no quota support")


def _prefixed(op: str, name: str, err: errdefs.EngineError) -> errdefs.EngineError:
    """dockerd's OpErr text: ``<op> <name>: <cause>``, same error type."""
    out = type(err)(f"{op} {name}: {err.message}")
    out.__cause__ = err
    return out


def _name_match(values: Sequence[str], name: str) -> bool:
    """filters.Args.Match: an exact value, or an unanchored regex that matches."""
    if not values or name in values:
        return True
    for pattern in values:
        with contextlib.suppress(re.error):
            if re.search(pattern, name):
                return True
    return False


def _needs_mount(record: VolumeRecord) -> bool:
    opts = record.options or {}
    return bool(opts.get("device") or opts.get("type"))


class VolumeService:
    def __init__(self, store: VolumeStore, events: EventBus) -> None:
        self.store = store
        self.events = events
        self._checker: UsageChecker = lambda name: ()
        self._refs: dict[str, set[str]] = {}  # references of containers still being created
        self._active: dict[str, set[str]] = {}  # mount references of volumes with a device mount
        self._locks: dict[str, asyncio.Lock] = {}
        self._pruning = False

    def set_usage_checker(self, checker: UsageChecker) -> None:
        """``checker(name)`` -> ids of the containers whose mounts use volume ``name``."""
        self._checker = checker

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def publish(self, name: str, action: str, attributes: dict[str, str] | None = None) -> None:
        self.events.publish("volume", action, name, {"driver": DRIVER, **(attributes or {})})

    # -- queries -------------------------------------------------------------------

    def users(self, name: str) -> list[str]:
        return sorted(set(self._checker(name)) | self._refs.get(name, set()))

    def data_path(self, name: str) -> Path:
        return self.store.data_path(name)

    def _get(self, name: str) -> VolumeRecord:
        record = self.store.get(name)
        if record is None:
            raise errdefs.NotFound(f"get {name}: no such volume")
        return record

    def to_docker(self, record: VolumeRecord) -> dict[str, Any]:
        return {
            "CreatedAt": go_rfc3339(record.created_ns),
            "Driver": record.driver,
            "Labels": record.labels,
            "Mountpoint": str(self.store.data_path(record.name)),
            "Name": record.name,
            "Options": record.options,
            "Scope": "local",
        }

    async def inspect(self, name: str) -> dict[str, Any]:
        return self.to_docker(self._get(name))

    async def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """``GET /volumes``: filters ``name`` (regex), ``driver``, ``label``, ``dangling``."""
        filters = filters or {}
        validate(filters, LIST_FILTERS)
        dangling = bool_or_default(filters, "dangling", False) if "dangling" in filters else None
        out = []
        for record in self.store.list():
            if filters.get("driver") and record.driver not in filters["driver"]:
                continue
            if "name" in filters and not _name_match(filters["name"], record.name):
                continue
            if not match_kv(filters.get("label") or (), record.labels):
                continue
            if dangling is not None and bool(self.users(record.name)) == dangling:
                continue
            out.append(self.to_docker(record))
        return out

    async def usage(self, name: str) -> tuple[int, int]:
        """``UsageData`` for ``system df -v``: (bytes, containers using it).

        Bytes is -1 for a volume with mount options: dockerd leaves those out of its size walk
        because their data lives elsewhere (an NFS export, a tmpfs, a host directory).
        """
        record = self._get(name)
        refs = len(self.users(name))
        if record.options:
            return -1, refs
        return await asyncio.to_thread(self.store.size, name), refs

    # -- create / remove -----------------------------------------------------------

    async def create(
        self,
        name: str | None = None,
        *,
        driver: str | None = None,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        reference: str | None = None,
    ) -> dict[str, Any]:
        """Create (or return the existing) volume; no name means an anonymous one (64-hex name).

        ``reference`` (a container id) marks the volume in use until ``release(name, reference)``.
        """
        anonymous = not name
        vname = name or secrets.token_hex(32)
        if anonymous:
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        try:
            if driver not in (None, "", DRIVER):
                raise errdefs.NotFound(
                    f'error looking up volume plugin {driver}: plugin "{driver}" not found'
                )
            validate_name(vname)
            if options:
                validate_options(options)
        except errdefs.EngineError as err:
            raise _prefixed("create", vname, err) from None
        async with self._lock(vname):
            record, _ = await asyncio.to_thread(
                self.store.create,
                vname,
                DRIVER,
                dict(labels) if labels is not None else None,
                dict(options) if options is not None else None,
            )
            if reference:
                self._refs.setdefault(vname, set()).add(reference)
        # dockerd logs "create" whenever a create succeeds, also for a volume that existed.
        self.publish(vname, "create")
        return self.to_docker(record)

    def reference(self, name: str, reference: str) -> None:
        """Mark an existing volume in use by ``reference`` (``--volumes-from``); NotFound if missing."""
        self._get(name)
        self._refs.setdefault(name, set()).add(reference)

    def release(self, name: str, reference: str) -> None:
        refs = self._refs.get(name)
        if refs is not None:
            refs.discard(reference)
            if not refs:
                del self._refs[name]

    async def remove(self, name: str, force: bool = False) -> None:
        """``DELETE /volumes/{name}``: 409 while used (even with force); force ignores a missing one."""
        if self.store.get(name) is None:
            if force:
                return
            raise errdefs.NotFound(f"get {name}: no such volume")
        async with self._lock(name):
            users = self.users(name)
            if users:
                raise errdefs.Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            await self._destroy(name)

    async def _destroy(self, name: str) -> None:
        """Remove an unused volume (lock held): undo a leftover device mount first, never rm through it."""
        data = self.store.data_path(name)
        self._active.pop(name, None)
        if await asyncio.to_thread(mounts.is_mounted, data):
            await asyncio.to_thread(mounts.unmount, data)
        await asyncio.to_thread(self.store.remove, name)
        self._locks.pop(name, None)
        self.publish(name, "destroy")

    async def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """``POST /volumes/prune``: unused local volumes without mount options; anonymous ones only
        unless ``all=true`` (the router adds it for API < 1.42, as dockerd does)."""
        if self._pruning:
            raise errdefs.Conflict("a prune operation is already running")
        self._pruning = True
        try:
            return await self._prune(dict(filters or {}))
        finally:
            self._pruning = False

    async def _prune(self, filters: dict[str, Sequence[str]]) -> dict[str, Any]:
        every = list(filters.get("all") or ())
        if len(every) > 1:
            raise errdefs.InvalidParameter(
                f"invalid filter 'all=[{' '.join(every)}]': only one value is expected"
            )
        prune_all = False
        if every:
            value = every[0]
            if value not in _GO_TRUE + _GO_FALSE:
                raise errdefs.InvalidParameter(
                    f"invalid filter 'all': strconv.ParseBool: parsing \"{every[0]}\": invalid syntax"
                )
            prune_all = value in _GO_TRUE
        validate(filters, PRUNE_FILTERS)
        labels = list(filters.get("label") or ())
        if not prune_all:
            labels.append(ANONYMOUS_LABEL)
        excluded = list(filters.get("label!") or ())
        deleted: list[str] = []
        reclaimed = 0
        for record in self.store.list():
            if record.driver != DRIVER or record.options or not match_kv(labels, record.labels):
                continue
            if excluded and match_kv(excluded, record.labels):
                continue
            async with self._lock(record.name):
                if self.store.get(record.name) is None or self.users(record.name):
                    continue
                try:
                    size = await asyncio.to_thread(self.store.size, record.name)
                    await self._destroy(record.name)
                except (errdefs.EngineError, OSError) as err:
                    log.warning("could not prune volume %s: %s", record.name, err)
                    continue
            deleted.append(record.name)
            reclaimed += size
        self.events.publish("volume", "prune", "", {"reclaimed": str(reclaimed)})
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}

    # -- mount / unmount -----------------------------------------------------------

    async def mount(self, name: str, ref: str) -> Path:
        """The host path to bind into a container; makes the driver's mount for the first user."""
        async with self._lock(name):
            record = self._get(name)
            data = self.store.data_path(name)
            if not _needs_mount(record):
                return data
            active = self._active.setdefault(name, set())
            # A mount left by a daemon that died is adopted rather than stacked.
            if not active and not await asyncio.to_thread(mounts.is_mounted, data):
                try:
                    await asyncio.to_thread(self._mount_device, record, data)
                except BaseException:
                    self._active.pop(name, None)
                    raise
            active.add(ref)
            return data

    async def unmount(self, name: str, ref: str) -> None:
        async with self._lock(name):
            active = self._active.get(name)
            if active is None:
                return
            active.discard(ref)
            if active:
                return
            del self._active[name]
            data = self.store.data_path(name)
            try:
                await asyncio.to_thread(mounts.unmount, data)
            except errdefs.EngineError as err:
                log.warning("cannot unmount volume %s: %s", name, err.message)

    @staticmethod
    def _mount_device(record: VolumeRecord, data: Path) -> None:
        opts = record.options or {}
        device, kind, flags = opts.get("device", ""), opts.get("type", ""), opts.get("o", "")
        if not device:
            raise errdefs.Internal(f"error while mounting volume '{data}': missing device in volume options")
        options = tuple(o for o in flags.split(",") if o)
        binding = "bind" in options or "rbind" in options
        if binding and not Path(device).exists():
            # util-linux words this differently; dockerd relays mount(2)'s errno text.
            detail = f"mount {device}:{data}, flags: 0x1000: no such file or directory"
            raise errdefs.Internal(
                f"error while mounting volume '{data}': failed to mount local volume: {detail}"
            )
        try:
            mounts.mount_all([mounts.Mount(kind or "none", device, options)], data)
        except errdefs.EngineError as err:
            detail = err.message.removeprefix(f"failed to mount {data}: ")
            raise errdefs.Internal(
                f"error while mounting volume '{data}': failed to mount local volume: {detail}"
            ) from err
