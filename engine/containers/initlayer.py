"""The entries of dockerd's ``-init`` layer, written into a new container's own layer.

dockerd puts a small layer between the image and every container (daemon/initlayer): the mount
points the runtime needs and ``/.dockerenv``, which programs test to know they run under
Docker. They are visible in the running container and in ``docker export``, never in
``docker diff`` or ``docker commit``. skiff has no separate layer: ``populate`` writes the same
entries straight into the fresh upper dir (before it is ever mounted), and ``fsdiff`` and the
commit code skip them as init artifacts; ``artifact_bytes`` is what they add to SizeRw, which
dockerd does not count.

Like dockerd, a file the image has at one of these paths is replaced by an empty one (dockerd
unlinks it before creating it), a directory is kept. Synchronous; run through asyncio.to_thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

# dockerd's initlayer.Setup table: path -> "dir", "file" or a symlink target.
INIT_ENTRIES: tuple[tuple[str, str], ...] = (
    ("/dev/pts", "dir"),
    ("/dev/shm", "dir"),
    ("/proc", "dir"),
    ("/sys", "dir"),
    ("/.dockerenv", "file"),
    ("/etc/resolv.conf", "file"),
    ("/etc/hosts", "file"),
    ("/etc/hostname", "file"),
    ("/dev/console", "file"),
    ("/etc/mtab", "/proc/mounts"),
)
MODE = 0o755


def _lower_lstat(lowers: Sequence[Path], rel: str) -> os.stat_result | None:
    for layer in lowers:
        try:
            return os.lstat(str(layer) + rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def _ensure_dir(upper: Path, lowers: Sequence[Path], rel: str) -> None:
    """Make ``rel`` and its parents exist in the upper dir, as an overlay copy-up would."""
    parent = os.path.dirname(rel)
    if parent != "/":
        _ensure_dir(upper, lowers, parent)
    target = str(upper) + rel
    if os.path.isdir(target) and not os.path.islink(target):
        return
    below = _lower_lstat(lowers, rel)
    os.mkdir(target, MODE)
    if below is not None and stat.S_ISDIR(below.st_mode):
        # Keep the image's owner and mode so the merged directory looks like the image's.
        os.chown(target, below.st_uid, below.st_gid)
        os.chmod(target, stat.S_IMODE(below.st_mode))
    else:
        os.chmod(target, MODE)  # not subject to the umask


def populate(upper: Path, lowers: Sequence[Path]) -> None:
    """Write the init entries into a container's fresh upper dir; ``lowers`` topmost first."""
    for rel, kind in INIT_ENTRIES:
        below = _lower_lstat(lowers, rel)
        if below is not None and stat.S_ISDIR(below.st_mode):
            continue  # dockerd's unlink fails on a directory, which then stays
        _ensure_dir(upper, lowers, os.path.dirname(rel))
        target = str(upper) + rel
        if kind == "dir":
            _ensure_dir(upper, lowers, rel)
        elif kind == "file":
            fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, MODE)
            os.close(fd)
            os.chmod(target, MODE)
        elif not os.path.lexists(target):
            os.symlink(kind, target)


def artifact_bytes(upper: Path) -> int:
    """What the init entries count in the upper dir's apparent size (the /etc/mtab link)."""
    total = 0
    for rel, kind in INIT_ENTRIES:
        if kind in ("dir", "file"):
            continue
        try:
            st = os.lstat(str(upper) + rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(st.st_mode) and os.readlink(str(upper) + rel) == kind:
            total += st.st_size
    return total
