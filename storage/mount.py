"""Mount descriptions and the thin wrappers that apply and remove them.

A snapshotter only *describes* mounts (containerd semantics); this module is the one
place that turns a description into a kernel mount, by running util-linux ``mount`` and
``umount`` with argv lists. Everything is synchronous: the engine calls it through
``asyncio.to_thread``. ``mount_argv`` is pure so the argv can be unit-tested without root.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import errdefs

# mount(2) copies the option string into a single page; util-linux 2.38 still uses the
# classic syscall, so a longer string fails with EINVAL before overlayfs sees it.
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_OVERLAY_PATH_OPTIONS = ("lowerdir=", "upperdir=", "workdir=")
_BUSY_RETRIES = 5


@dataclass(frozen=True)
class Mount:
    """One mount, as containerd's ``mount.Mount``: ``mount -t TYPE -o OPTIONS SOURCE target``."""

    type: str
    source: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class MountCommand:
    argv: list[str]
    cwd: str | None = None


def mount_argv(mount: Mount, target: Path) -> MountCommand:
    """Build the ``mount`` invocation for one Mount.

    An overlay whose option string would not fit in a page is rewritten to paths relative to
    the directory its layers share (containerd's ``compactLowerdirOption``), and the command
    runs from there. With skiff's ``snapshots/<n>/fs`` layout that is about 8 bytes per layer,
    well past overlayfs's own limit of 500 lower layers.
    """
    options = list(mount.options)
    cwd: str | None = None
    if mount.type == "overlay" and len(",".join(options)) >= _PAGE_SIZE:
        options, cwd = _relative_overlay_options(options)
        if len(",".join(options)) >= _PAGE_SIZE:
            raise errdefs.InvalidParameter(
                f"overlay mount options exceed {_PAGE_SIZE} bytes even with relative layer paths"
            )
    argv = ["mount", "-t", mount.type]
    if options:
        argv += ["-o", ",".join(options)]
    # Absolute: the command may run from another directory (relative overlay paths above).
    argv += [mount.source, os.path.abspath(target)]
    return MountCommand(argv, cwd)


def _relative_overlay_options(options: list[str]) -> tuple[list[str], str]:
    paths: list[str] = []
    for opt in options:
        for prefix in _OVERLAY_PATH_OPTIONS:
            if opt.startswith(prefix):
                paths += opt[len(prefix) :].split(":")
    common = os.path.commonpath(paths) if paths else "/"
    rewritten: list[str] = []
    for opt in options:
        for prefix in _OVERLAY_PATH_OPTIONS:
            if opt.startswith(prefix):
                rel = [os.path.relpath(p, common) for p in opt[len(prefix) :].split(":")]
                opt = prefix + ":".join(rel)
                break
        rewritten.append(opt)
    return rewritten, common


def _run(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    # C locale so that the stderr texts matched below ("busy") are not translated.
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def mount_all(mounts: Sequence[Mount], target: Path) -> None:
    """Mount each Mount on ``target`` in order; on failure undo the ones already mounted."""
    done = 0
    try:
        for m in mounts:
            cmd = mount_argv(m, target)
            result = _run(cmd.argv, cmd.cwd)
            if result.returncode != 0:
                detail = result.stderr.strip() or f"exit status {result.returncode}"
                raise errdefs.Internal(f"failed to mount {target}: {detail}")
            done += 1
    except BaseException:
        for _ in range(done):
            unmount_one(target)
        raise


def unmount_one(target: Path) -> None:
    """Remove the top mount on ``target`` (no-op if nothing is mounted there)."""
    for attempt in range(_BUSY_RETRIES):
        if not is_mounted(target):
            return
        result = _run(["umount", str(target)])
        if result.returncode == 0 or not is_mounted(target):
            return
        if "busy" not in result.stderr.lower():
            raise errdefs.Internal(f"failed to unmount {target}: {result.stderr.strip()}")
        time.sleep(0.05 * 2**attempt)
    # Still busy after the retries: detach lazily so the path is free, as dockerd does for
    # a container rootfs that a straggling process keeps open; the kernel frees it later.
    result = _run(["umount", "-l", str(target)])
    if result.returncode != 0 and is_mounted(target):
        raise errdefs.Internal(f"failed to unmount {target}: {result.stderr.strip()}")


def detach(target: Path) -> None:
    """Lazily unmount ``target`` (``umount -l``): the path is free at once, while descriptors
    already open below it keep the mount alive until they close. Idempotent."""
    if not is_mounted(target):
        return
    result = _run(["umount", "-l", str(target)])
    if result.returncode != 0 and is_mounted(target):
        raise errdefs.Internal(f"failed to unmount {target}: {result.stderr.strip()}")


def unmount(target: Path) -> None:
    """Unmount everything stacked on ``target``. Idempotent: nothing mounted is fine."""
    # mount_all may stack several mounts on one target; bound the loop in case a mount
    # propagates back onto the target faster than we remove it.
    for _ in range(64):
        if not is_mounted(target):
            return
        unmount_one(target)
    raise errdefs.Internal(f"failed to unmount {target}: mounts keep reappearing")


def _unescape_mountinfo(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash in mountinfo as \ooo octal.
    if "\\" not in field:
        return field
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mount_points(mountinfo: str | None = None) -> list[str]:
    """Mount points listed in ``/proc/self/mountinfo`` (or the given text), in mount order."""
    if mountinfo is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape_mountinfo(fields[4]))
    return points


def is_mounted(path: Path | str) -> bool:
    """Whether something is mounted exactly on ``path``."""
    real = os.path.realpath(path)
    return real in mount_points()
