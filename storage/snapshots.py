"""Overlay snapshotter with containerd's semantics: it returns mounts, it never mounts.

Layout under ``root`` (containerd's overlay.go layout)::

    snapshots/<n>/fs         the snapshot's own files (upperdir when active, a layer when committed)
    snapshots/<n>/work       overlay workdir (active snapshots only)
    snapshots/<n>/meta.json  {"schema": 1, "id", "name", "kind", "parent", "labels"}
    trash/                   snapshots being removed

Keys and names may contain any character because they live only in ``meta.json``; the
directory is a small decimal id so that ``lowerdir=`` stays short. With a default data
root each layer costs about 40 bytes of the 4096-byte mount option page, so ~100 layers
fit as absolute paths; ``storage.mount`` switches to relative paths past that, which
reaches overlayfs's own 500-layer limit (dockerd caps images at 125 layers).

``meta.json`` is the only source of truth. The key index is rebuilt at start-up by
scanning; a directory without a valid ``meta.json`` is a creation interrupted by a crash
and is discarded. Removal renames the directory into ``trash/`` first (one atomic step
that takes the metadata with it) and deletes it afterwards, so a crash never leaves a
half-deleted snapshot that is still referenced.

Synchronous and thread-safe; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine import errdefs
from storage.jsonfile import atomic_write_json, read_json
from storage.mount import Mount

Kind = Literal["active", "view", "committed"]
_KINDS: tuple[Kind, ...] = ("active", "view", "committed")

# <linux/fs.h>: the inode flags ioctls and "top of directory hierarchy" (chattr +T).
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000
_FLAGS = struct.Struct("=I")


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    kind: Kind
    parent: str | None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    size: int
    inodes: int


@dataclass
class _Record:
    id: int
    name: str
    kind: Kind
    parent: str | None
    labels: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "parent": self.parent,
            "labels": self.labels,
        }

    def info(self) -> SnapshotInfo:
        return SnapshotInfo(self.name, self.kind, self.parent, dict(self.labels))


def _record_from_json(obj: Any, dir_id: int) -> _Record:
    if not isinstance(obj, dict) or obj.get("schema") != 1 or obj.get("id") != dir_id:
        raise ValueError("bad snapshot metadata")
    name, kind, parent, labels = obj.get("name"), obj.get("kind"), obj.get("parent"), obj.get("labels")
    if not isinstance(name, str) or kind not in _KINDS or not (parent is None or isinstance(parent, str)):
        raise ValueError("bad snapshot metadata")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("bad snapshot metadata")
    return _Record(dir_id, name, kind, parent, {str(k): v for k, v in labels.items()})


def mark_topdir(path: Path) -> bool:
    """Flag ``path`` as a top of directory hierarchies, where the file system supports it.

    Each snapshot is a hierarchy of its own. Without the flag ext4's Orlov allocator keeps every
    snapshot directory, and so every inode unpacked into it, in the block group of the data root;
    when that group is crowded, creating each file or symlink means searching for a free inode,
    which made a busybox layer's 268 symlinks take 20-80 ms instead of 3. With it ext4 spreads the
    snapshot directories over groups with free inodes, as it does for directories under ``/``.
    File systems without the flag (tmpfs, xfs, btrfs, overlay) refuse the ioctl; nothing changes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        buf = bytearray(8)  # the kernel reads and writes an int; room for a long does no harm
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        (flags,) = _FLAGS.unpack_from(buf)
        if not flags & FS_TOPDIR_FL:
            _FLAGS.pack_into(buf, 0, flags | FS_TOPDIR_FL)
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf)
        return True
    except OSError:  # ENOTTY/EOPNOTSUPP and the like: a hint the file system cannot take
        return False
    finally:
        os.close(fd)


def disk_usage(path: Path) -> Usage:
    """Apparent size of the files under ``path`` (hard links counted once) and inode count.

    Apparent bytes rather than allocated blocks because that is what dockerd reports for
    layer sizes and SizeRw (``directory.Size``), and clients show those numbers.
    """
    seen: set[tuple[int, int]] = set()
    size = 0
    inodes = 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            inodes += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            else:
                size += st.st_size
    return Usage(size=size, inodes=inodes)


class OverlaySnapshotter:
    """containerd-style snapshots over overlayfs, addressed by key (active/view) or name (committed)."""

    def __init__(self, root: Path) -> None:
        if any(c in str(root) for c in ",:\\"):
            # These characters separate overlay mount options and lowerdir entries.
            raise errdefs.InvalidParameter(f"overlay root {root} must not contain ',', ':' or '\\'")
        self.root = root
        self._snapshots = root / "snapshots"
        self._trash = root / "trash"
        self._lock = threading.Lock()
        self._index: dict[str, _Record] = {}
        self._next_id = 1
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._snapshots.mkdir(exist_ok=True, mode=0o700)
        mark_topdir(self._snapshots)
        shutil.rmtree(self._trash, ignore_errors=True)
        self._trash.mkdir(mode=0o700)
        self._load()

    def _load(self) -> None:
        highest = 0
        for entry in os.scandir(self._snapshots):
            if not entry.name.isdigit():
                continue
            dir_id = int(entry.name)
            highest = max(highest, dir_id)
            try:
                record = _record_from_json(read_json(Path(entry.path) / "meta.json"), dir_id)
            except (OSError, ValueError):
                self._discard(Path(entry.path))
                continue
            self._index[record.name] = record
        self._next_id = highest + 1

    def _dir(self, record: _Record) -> Path:
        return self._snapshots / str(record.id)

    def _discard(self, path: Path) -> None:
        target = self._trash / f"{path.name}-{os.urandom(4).hex()}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        shutil.rmtree(target, ignore_errors=True)

    def _get(self, key: str) -> _Record:
        record = self._index.get(key)
        if record is None:
            raise errdefs.NotFound(f"snapshot {key} does not exist")
        return record

    def _parents(self, record: _Record) -> list[_Record]:
        chain = []
        parent = record.parent
        while parent is not None:
            p = self._get(parent)
            chain.append(p)
            parent = p.parent
        return chain

    def _mounts(self, record: _Record) -> list[Mount]:
        fs = str(self._dir(record) / "fs")
        lowers = [str(self._dir(p) / "fs") for p in self._parents(record)]
        if record.kind == "committed":
            raise errdefs.InvalidParameter(f"snapshot {record.name} is committed; mount a view of it instead")
        if record.kind == "view":
            if not lowers:
                return [Mount("bind", fs, ("ro", "rbind"))]
            if len(lowers) == 1:
                return [Mount("bind", lowers[0], ("ro", "rbind"))]
            # A read-only overlay needs no upper/work dir, only two or more lowers.
            return [Mount("overlay", "overlay", ("lowerdir=" + ":".join(lowers),))]
        if not lowers:
            return [Mount("bind", fs, ("rw", "rbind"))]
        work = str(self._dir(record) / "work")
        return [
            Mount("overlay", "overlay", (f"workdir={work}", f"upperdir={fs}", "lowerdir=" + ":".join(lowers)))
        ]

    def _create(self, key: str, parent: str | None, labels: dict[str, str] | None, kind: Kind) -> list[Mount]:
        if not key:
            raise errdefs.InvalidParameter("snapshot key must not be empty")
        with self._lock:
            if key in self._index:
                raise errdefs.Conflict(f"snapshot {key} already exists")
            if parent is not None:
                p = self._index.get(parent)
                if p is None:
                    raise errdefs.NotFound(f"parent snapshot {parent} does not exist")
                if p.kind != "committed":
                    raise errdefs.InvalidParameter(f"parent snapshot {parent} is not committed")
            record = _Record(self._next_id, key, kind, parent, dict(labels or {}))
            self._next_id += 1
            path = self._dir(record)
            path.mkdir(mode=0o700)
            try:
                (path / "fs").mkdir(mode=0o755)
                if kind == "active":
                    (path / "work").mkdir(mode=0o700)
                # meta.json last: its presence is what makes the snapshot exist after a crash.
                atomic_write_json(path / "meta.json", record.to_json())
                mounts = self._mounts(record)
            except BaseException:
                self._discard(path)
                raise
            self._index[key] = record
            return mounts

    def prepare(self, key: str, parent: str | None, labels: dict[str, str] | None = None) -> list[Mount]:
        """Create an active (writable) snapshot on top of committed ``parent``."""
        return self._create(key, parent, labels, "active")

    def view(self, key: str, parent: str | None, labels: dict[str, str] | None = None) -> list[Mount]:
        """Create a read-only view of committed ``parent``."""
        return self._create(key, parent, labels, "view")

    def commit(self, name: str, key: str, labels: dict[str, str] | None = None) -> None:
        """Turn active snapshot ``key`` into committed ``name``; ``labels`` are merged in."""
        with self._lock:
            record = self._get(key)
            if record.kind != "active":
                raise errdefs.InvalidParameter(f"snapshot {key} is not active")
            if not name:
                raise errdefs.InvalidParameter("snapshot name must not be empty")
            if name in self._index:
                raise errdefs.Conflict(f"snapshot {name} already exists")
            merged = {**record.labels, **(labels or {})}
            committed = _Record(record.id, name, "committed", record.parent, merged)
            atomic_write_json(self._dir(committed) / "meta.json", committed.to_json())
            del self._index[key]
            self._index[name] = committed

    def remove(self, key: str) -> None:
        """Delete a snapshot. NotFound if missing, Conflict if a snapshot is built on it."""
        with self._lock:
            record = self._get(key)
            children = [r.name for r in self._index.values() if r.parent == key]
            if children:
                raise errdefs.Conflict(f"cannot remove snapshot {key}: it has {len(children)} child(ren)")
            target = self._trash / f"{record.id}-{os.urandom(4).hex()}"
            os.rename(self._dir(record), target)
            del self._index[key]
        shutil.rmtree(target, ignore_errors=True)

    def mounts(self, key: str) -> list[Mount]:
        with self._lock:
            return self._mounts(self._get(key))

    def stat(self, key: str) -> SnapshotInfo:
        with self._lock:
            return self._get(key).info()

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._index

    def usage(self, key: str) -> Usage:
        """Bytes and inodes in the snapshot's own directory (not its parents)."""
        return disk_usage(self.upperdir(key))

    def walk(self) -> Iterator[SnapshotInfo]:
        with self._lock:
            records = sorted(self._index.values(), key=lambda r: r.id)
        for record in records:
            yield record.info()

    def upperdir(self, key: str) -> Path:
        """The snapshot's own directory: the writable upper of an active snapshot, the layer
        contents (with overlay whiteouts) of a committed one."""
        with self._lock:
            return self._dir(self._get(key)) / "fs"

    def lowerdirs(self, key: str) -> list[Path]:
        """The ``fs`` directories of the snapshot's parents, topmost first."""
        with self._lock:
            return [self._dir(p) / "fs" for p in self._parents(self._get(key))]
