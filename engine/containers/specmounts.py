"""The mounts list of config.json, assembled the way dockerd's WithMounts does it.

Order: Docker's default kernel filesystems (proc, /dev, devpts, sysfs, cgroup, mqueue, shm),
the init binary, then the user mounts (--tmpfs, and the engine's binds/volumes/hosts files)
stably sorted by path depth so a parent is always mounted before its children. A user mount
replaces the default on the same destination; a user /dev drops every default under /dev.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from engine import errdefs
from engine.containers import gofmt

Mount = dict[str, Any]

DEFAULT_SHM_SIZE = 64 << 20
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"

# --read-only leaves these writable: they are kernel pseudo filesystems a process needs.
_READONLY_EXEMPT = frozenset({"/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"})
_TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev", "rprivate")
_PROPAGATION = frozenset(
    {"bind", "rbind", "unbindable", "runbindable", "private", "rprivate"}
    | {"shared", "rshared", "slave", "rslave"}
)
# Mount flags by the MS_* bit they set or clear; an option and its negation share one key.
_FLAG_KEYS = {
    "ro": "RDONLY", "rw": "RDONLY", "suid": "NOSUID", "nosuid": "NOSUID", "dev": "NODEV", "nodev": "NODEV",
    "exec": "NOEXEC", "noexec": "NOEXEC", "sync": "SYNC", "async": "SYNC", "dirsync": "DIRSYNC",
    "remount": "REMOUNT", "mand": "MANDLOCK", "nomand": "MANDLOCK", "atime": "NOATIME", "noatime": "NOATIME",
    "diratime": "NODIRATIME", "nodiratime": "NODIRATIME", "relatime": "RELATIME", "norelatime": "RELATIME",
    "strictatime": "STRICTATIME", "nostrictatime": "STRICTATIME",
}  # fmt: skip
_TMPFS_DATA_KEYS = frozenset({"", "size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def _mount(dest: str, kind: str, source: str, *options: str) -> Mount:
    return {"destination": dest, "type": kind, "source": source, "options": list(options)}


def default_mounts() -> list[Mount]:
    return [
        _mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ),
        _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", "ro", "nosuid", "noexec", "nodev"),
        _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777"),
    ]


def init_mount(init_path: str) -> Mount:
    return _mount(INIT_PATH_IN_CONTAINER, "bind", init_path, "bind", "ro")


def merge_tmpfs_options(options: Sequence[str]) -> list[str]:
    """moby/sys/mount MergeTmpfsOptions: the last of each flag pair or data key wins, order kept."""
    seen_flags: set[str] = set()
    seen_data: set[str] = set()
    merged: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = "PROPAGATION" if option in _PROPAGATION else _FLAG_KEYS.get(option)
        if key is not None:
            if key not in seen_flags:
                merged.insert(0, option)
                seen_flags.add(key)
            continue
        parts = option.split("=", 1)
        if len(parts) != 2 or parts[0] not in _TMPFS_DATA_KEYS:
            raise errdefs.Internal(f"invalid tmpfs option {gofmt.quote_list(parts)}")
        if parts[0] not in seen_data:
            merged.insert(0, option)
            seen_data.add(parts[0])
    return merged


def tmpfs_mounts(tmpfs: Mapping[str, str] | None) -> list[Mount]:
    """HostConfig.Tmpfs (destination -> "size=1m,mode=700,exec"), noexec/nosuid/nodev by default."""
    out = []
    for dest in sorted(tmpfs or {}):  # dockerd walks a Go map; sorting keeps config.json stable
        data = tmpfs[dest] if tmpfs else ""
        options = list(_TMPFS_DEFAULTS) + (data.split(",") if data else [])
        out.append(_mount(dest, "tmpfs", "tmpfs", *merge_tmpfs_options(options)))
    return out


def _depth(mount: Mount) -> int:
    return os.path.normpath(str(mount["destination"])).count("/")


def _clear_readonly(mount: Mount) -> None:
    mount["options"] = [o for o in mount.get("options", []) if o != "ro"]


def assemble_mounts(
    *,
    user_mounts: Sequence[Mount],
    init_path: str | None,
    shm_size: int,
    ipc_mode: str,
    readonly_root: bool,
    privileged: bool,
    writable_cgroups: bool,
) -> list[Mount]:
    user = [dict(m, options=list(m.get("options", []))) for m in user_mounts]
    user_dests = {str(m["destination"]) for m in user}
    if ipc_mode == "host" and "/dev/shm" not in user_dests:
        # --ipc host shares the host's /dev/shm (dockerd's IpcMounts).
        user.append(_mount("/dev/shm", "bind", "/dev/shm", "rbind", "rprivate"))
        user_dests.add("/dev/shm")
    user.sort(key=_depth)  # stable: equal depths keep the engine's order

    defaults = default_mounts() + ([init_mount(init_path)] if init_path else [])
    mounts: list[Mount] = []
    for m in defaults:
        dest = m["destination"]
        if dest in user_dests or ("/dev" in user_dests and dest.startswith("/dev/")):
            continue
        if dest == "/dev/shm":
            if ipc_mode == "none":
                continue
            m["options"].append(f"size={shm_size or DEFAULT_SHM_SIZE}")
        mounts.append(m)
    mounts.extend(user)

    if readonly_root:
        for m in mounts:
            dest = m["destination"]
            if dest not in _READONLY_EXEMPT and dest not in user_dests and "ro" not in m["options"]:
                m["options"].append("ro")
    for m in mounts:
        if privileged and m["destination"] == "/sys":
            _clear_readonly(m)
        if (privileged or writable_cgroups) and m.get("type") == "cgroup":
            _clear_readonly(m)
    for m in mounts:
        if not m.get("options"):
            m.pop("options", None)  # Go's omitempty
    return mounts


def rootfs_propagation(user_mounts: Sequence[Mount]) -> str | None:
    """linux.rootfsPropagation needed for shared/slave binds to propagate at all (as dockerd sets it)."""
    options = {o for m in user_mounts for o in m.get("options", [])}
    if options & {"shared", "rshared"}:
        return "shared"
    if options & {"slave", "rslave"}:
        return "rslave"
    return None
