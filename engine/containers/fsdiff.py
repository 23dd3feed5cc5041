"""``docker diff`` and the filesystem view ``docker export`` reads, from a container's overlay layers.

``changes`` follows dockerd's ``archive.OverlayChanges``: walk the container's upper dir in
lexical order; a 0/0 character device (whiteout) or an opaque directory is a deletion, a path
that exists in a lower layer is a modification, anything else an addition; the parent of an
added or deleted path is reported as modified once; a directory that only exists because a
child changed, with the same size/mode/mtime as below, is not reported itself.

dockerd keeps the mount points the runtime needs (``/etc/hosts``, ``/proc``, ``/dev``, …) in a
separate ``-init`` layer under the container's layer, so they never show up as changes. skiff has
no init layer: runc creates the missing mount points in the upper dir. Those exact paths (empty
files and directories) are skipped, and so is a directory that holds nothing else.

Synchronous; the engine calls these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.archive import is_opaque_dir
from storage.mount import Mount

# Kind values of Docker's container.FilesystemChange.
MODIFIED, ADDED, DELETED = 0, 1, 2

# What dockerd's init layer holds (daemon/initlayer): mount points, so never container changes.
INIT_PATHS = frozenset({
    "/dev", "/dev/pts", "/dev/shm", "/dev/console", "/proc", "/sys", "/.dockerenv",
    "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/mtab",
})  # fmt: skip


@dataclass(frozen=True)
class Change:
    path: str
    kind: int

    def to_docker(self) -> dict[str, object]:
        return {"Path": self.path, "Kind": self.kind}


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_init_artifact(rel: str, st: os.stat_result) -> bool:
    """A mount point runc made in the upper dir where dockerd's init layer would have it."""
    if rel not in INIT_PATHS:
        return False
    if stat.S_ISDIR(st.st_mode):
        return True
    return (stat.S_ISREG(st.st_mode) and st.st_size == 0) or stat.S_ISLNK(st.st_mode)


def _lower_stat(lowers: Sequence[Path], rel: str) -> os.stat_result | None:
    for layer in lowers:
        try:
            # os.Stat in dockerd: follows symlinks, a dangling one counts as absent.
            return os.stat(str(layer) + rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def _same_dir(a: os.stat_result, b: os.stat_result) -> bool:
    # sameFsTime: equal seconds and nanoseconds (or the same second when one side lacks them).
    return a.st_size == b.st_size and a.st_mode == b.st_mode and a.st_mtime_ns == b.st_mtime_ns


# Directories holding init-layer mount points: runc's copy-up makes them appear in the upper dir.
_INIT_PARENTS = frozenset(os.path.dirname(p) for p in INIT_PATHS) - {"/"}


class _Walker:
    def __init__(self, upper: Path, lowers: Sequence[Path]) -> None:
        self.upper = str(upper)
        self.lowers = lowers
        self.changes: list[Change] = []
        self.changed_dirs: set[str] = set()

    def walk(self, rel_dir: str) -> None:
        try:
            names = sorted(os.listdir(self.upper + rel_dir), key=os.fsencode)
        except FileNotFoundError:
            return
        prefix = rel_dir + "/"
        for name in names:
            rel = prefix + name
            st = os.lstat(self.upper + rel)
            skip = _is_init_artifact(rel, st) or (rel in _INIT_PARENTS and self._only_mount_points(rel, st))
            if not skip:
                self._record(rel, st)
            if stat.S_ISDIR(st.st_mode):
                self.walk(rel)

    def _only_mount_points(self, rel: str, st: os.stat_result) -> bool:
        """A directory in the upper dir only because runc created mount points in it."""
        if not stat.S_ISDIR(st.st_mode) or is_opaque_dir(self.upper + rel):
            return False
        with os.scandir(self.upper + rel) as entries:
            for entry in entries:
                if not _is_init_artifact(rel + "/" + entry.name, entry.stat(follow_symlinks=False)):
                    return False
        lower = _lower_stat(self.lowers, rel)
        return lower is None or stat.S_IMODE(lower.st_mode) == stat.S_IMODE(st.st_mode)

    def _record(self, rel: str, st: os.stat_result) -> None:
        if _is_whiteout(st) or (stat.S_ISDIR(st.st_mode) and is_opaque_dir(self.upper + rel)):
            kind = DELETED
        else:
            kind = ADDED
            lower = _lower_stat(self.lowers, rel)
            if lower is not None:
                if stat.S_ISDIR(lower.st_mode) and stat.S_ISDIR(st.st_mode) and _same_dir(st, lower):
                    return
                kind = MODIFIED
        # Recorded before the parent check so a directory never reports itself as its own parent.
        if stat.S_ISDIR(st.st_mode):
            self.changed_dirs.add(rel)
        if kind != MODIFIED:
            parent = os.path.dirname(rel)
            if parent not in self.changed_dirs and parent != "/":
                self.changes.append(Change(parent, MODIFIED))
                self.changed_dirs.add(parent)
        self.changes.append(Change(rel, kind))


def changes(upper: Path, lowers: Sequence[Path]) -> list[Change]:
    """The container's filesystem changes: ``upper`` is its own layer, ``lowers`` topmost first."""
    walker = _Walker(upper, lowers)
    walker.walk("")
    return walker.changes


def readonly_view(upper: Path, lowers: Sequence[Path]) -> list[Mount]:
    """Mounts showing the container's merged filesystem without writing anything.

    The upper dir becomes the top lower layer of a read-only overlay, so neither it nor the
    work dir is claimed: a concurrent ``start`` can still mount them read-write.
    """
    if not lowers:
        return [Mount("bind", str(upper), ("ro", "rbind"))]
    return [Mount("overlay", "overlay", ("lowerdir=" + ":".join(str(p) for p in (upper, *lowers)),))]
