"""Host device nodes for ``--device`` and ``--privileged``, as the ``devices`` input of build_spec.

These helpers stat the host's /dev (blocking; call them from a worker thread) so that build_spec
itself stays pure. Semantics follow containerd's pkg/oci HostDevices/DeviceFromPath and moby's
DevicesFromPath: symlinks are only followed into /dev, a directory maps every node below it,
and errors carry dockerd's text ("error gathering device information while adding custom
device ...", a 500 at start as every createSpec error is).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine import errdefs
from engine.containers import gofmt

# Mount points and bookkeeping dirs runc/containerd never copy from the host's /dev.
_SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


@dataclass(frozen=True)
class DeviceSpec:
    """One node to create in the container (linux.devices) plus its cgroup access."""

    path: str  # inside the container
    type: str  # "c" or "b" ("p" only ever appears to be skipped)
    major: int
    minor: int
    file_mode: int  # permission bits of the host node (mode &^ S_IFMT)
    uid: int
    gid: int
    permissions: str = "rwm"

    def to_oci(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "major": self.major,
            "minor": self.minor,
            "fileMode": self.file_mode,
            "uid": self.uid,
            "gid": self.gid,
        }

    def cgroup_rule(self) -> dict[str, Any]:
        return {
            "allow": True,
            "type": self.type,
            "major": self.major,
            "minor": self.minor,
            "access": self.permissions,
        }


class NotADevice(Exception):
    pass


def device_node(path: str, permissions: str = "rwm") -> DeviceSpec:
    """The node at ``path`` (lstat; a symlink is not a device). Raises OSError or NotADevice."""
    st = os.lstat(path)
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        raise NotADevice("not a device node")
    return DeviceSpec(
        path=path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        permissions=permissions,
    )


def _resolved_device_path(path: str) -> str:
    # Follow a symlink only when it lands under /dev, so a user-supplied link cannot point the
    # daemon at an arbitrary host file (moby's resolvedDevicePath).
    path = os.path.normpath(path)
    if not os.path.isabs(path) or not os.path.islink(path):
        return path
    target = os.path.realpath(path)
    return target if target == "/dev" or target.startswith("/dev/") else path


def device_from_path(path_on_host: str, path_in_container: str, permissions: str) -> list[DeviceSpec]:
    """One --device mapping: a node, or every node under a directory."""
    host = _resolved_device_path(path_on_host)
    try:
        node = device_node(host, permissions)
        return [_with_path(node, path_in_container)]
    except NotADevice as err:
        reason = str(err)
        found = []
        if os.path.isdir(host):
            for dirpath, dirnames, filenames in os.walk(host):
                dirnames.sort()
                for name in sorted(filenames):
                    child = os.path.join(dirpath, name)
                    try:
                        node = device_node(_resolved_device_path(child), permissions)
                    except (OSError, NotADevice):
                        continue
                    found.append(_with_path(node, child.replace(host, path_in_container, 1)))
        if found:
            return found
    except OSError as err:
        reason = _go_errno_text(err)
    raise errdefs.Internal(
        f"error gathering device information while adding custom device {gofmt.quote(path_on_host)}: {reason}"
    )


def _go_errno_text(err: OSError) -> str:
    # Go's syscall.Errno strings are glibc's with a lower-case first letter.
    text = os.strerror(err.errno) if err.errno else str(err)
    return text[:1].lower() + text[1:]


def _with_path(node: DeviceSpec, path: str) -> DeviceSpec:
    return DeviceSpec(
        path, node.type, node.major, node.minor, node.file_mode, node.uid, node.gid, node.permissions
    )


def host_devices(root: str = "/dev") -> list[DeviceSpec]:
    """Every char/block node of the host, for --privileged (sorted as os.ReadDir sorts)."""
    out: list[DeviceSpec] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIPPED_DIRS:
                out.extend(host_devices(entry.path))
            continue
        if entry.name == "console":
            continue  # runc makes /dev/console itself from the container's pty
        try:
            node = device_node(entry.path)
        except (FileNotFoundError, NotADevice):
            continue
        if node.type != "p":
            out.append(node)
    return out


def resolve_devices(host_config: Mapping[str, Any]) -> list[DeviceSpec]:
    """The ``devices`` argument of build_spec for this HostConfig.

    Privileged: all host nodes, plus mappings whose container path differs (with rwm; custom
    permissions are ignored in privileged mode, as dockerd only warns about them).
    """
    mappings: Sequence[Mapping[str, Any]] = host_config.get("Devices") or ()
    if host_config.get("Privileged"):
        out = host_devices()
        for m in mappings:
            if m.get("PathOnHost") != m.get("PathInContainer"):
                out.extend(
                    device_from_path(m["PathOnHost"], m.get("PathInContainer") or m["PathOnHost"], "rwm")
                )
        return out
    out = []
    for m in mappings:
        out.extend(
            device_from_path(
                m["PathOnHost"],
                m.get("PathInContainer") or m["PathOnHost"],
                m.get("CgroupPermissions") or "rwm",
            )
        )
    return out
