"""Facts about the host that ``/info`` and ``/version`` report: kernel, OS, memory, CPUs, cgroup
capabilities, the file system under the data root, sysctls, proxies and tool versions.

Everything is read fresh from /proc, /sys and /etc (cheap, synchronous: callers run
``probe_host`` in a worker thread). Tool versions come from running ``<tool> --version`` once,
asynchronously; they do not change while the daemon runs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from runtime.cgroups import CgroupLayout

# Go's GOARCH names, which /version reports (uname's machine names are in /info's Architecture).
_GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# dockerd's fsutils names for the backing file system of the data root.
_FS_NAMES = {
    "ext2": "extfs",
    "ext3": "extfs",
    "ext4": "extfs",
    "xfs": "xfs",
    "btrfs": "btrfs",
    "tmpfs": "tmpfs",
    "overlay": "overlayfs",
    "zfs": "zfs",
    "f2fs": "f2fs",
    "nfs": "nfs",
    "nfs4": "nfs",
    "ramfs": "ramfs",
    "squashfs": "squashfs",
}

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class CgroupInfo:
    version: str
    memory_limit: bool
    swap_limit: bool
    kernel_memory_tcp: bool
    oom_kill_disable: bool
    cpu_cfs_period: bool
    cpu_cfs_quota: bool
    cpu_shares: bool
    cpuset: bool
    pids_limit: bool


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    kernel_version: str
    operating_system: str
    os_version: str
    architecture: str
    ncpu: int
    mem_total: int
    open_fds: int
    cgroups: CgroupInfo
    ipv4_forwarding: bool
    bridge_nf_iptables: bool
    bridge_nf_ip6tables: bool
    backing_filesystem: str


@dataclass(frozen=True)
class ToolVersion:
    """What ``<tool> --version`` says, for /version Components and /info *Commit."""

    path: str
    version: str
    commit: str


def go_arch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    return _GOARCH.get(machine, machine)


def _read(path: str | Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def mem_total() -> int:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def os_release() -> tuple[str, str]:
    """PRETTY_NAME and VERSION_ID from os-release, as dockerd's operatingsystem package reads them."""
    fields: dict[str, str] = {}
    text = _read("/etc/os-release") or _read("/usr/lib/os-release") or ""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    return fields.get("PRETTY_NAME", "Linux"), fields.get("VERSION_ID", "")


def cgroup_info(layout: CgroupLayout | None = None) -> CgroupInfo:
    layout = layout or CgroupLayout.detect()
    if layout.version == 1:
        memory, cpu = layout.v1.get("memory"), layout.v1.get("cpu")

        def has(base: Path | None, name: str) -> bool:
            return base is not None and (base / name).exists()

        return CgroupInfo(
            version="1",
            memory_limit=memory is not None,
            swap_limit=has(memory, "memory.memsw.limit_in_bytes"),
            kernel_memory_tcp=has(memory, "memory.kmem.tcp.limit_in_bytes"),
            oom_kill_disable=has(memory, "memory.oom_control"),
            cpu_cfs_period=has(cpu, "cpu.cfs_period_us"),
            cpu_cfs_quota=has(cpu, "cpu.cfs_quota_us"),
            cpu_shares=has(cpu, "cpu.shares"),
            cpuset="cpuset" in layout.v1,
            pids_limit="pids" in layout.v1,
        )
    controllers: set[str] = set()
    if layout.unified is not None:
        controllers = set((_read(layout.unified / "cgroup.controllers") or "").split())
    return CgroupInfo(
        version="2",
        memory_limit="memory" in controllers,
        swap_limit="memory" in controllers,
        kernel_memory_tcp=False,
        oom_kill_disable=False,
        cpu_cfs_period="cpu" in controllers,
        cpu_cfs_quota="cpu" in controllers,
        cpu_shares="cpu" in controllers,
        cpuset="cpuset" in controllers,
        pids_limit="pids" in controllers,
    )


def backing_filesystem(path: Path, mountinfo: str | None = None) -> str:
    """The file system type of the mount that holds ``path`` (the nearest existing ancestor)."""
    target = path.resolve()
    while not target.exists() and target != target.parent:
        target = target.parent
    best, fstype = "", "unknown"
    for line in (mountinfo if mountinfo is not None else _read("/proc/self/mountinfo") or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = str(target) == point or str(target).startswith(point.rstrip("/") + "/")
        # Later lines win ties: they are mounted on top.
        if inside and len(point) >= len(best):
            best, fstype = point, rest[0]
    return _FS_NAMES.get(fstype, fstype)


def _sysctl_on(path: str, missing: bool = False) -> bool:
    value = _read(path)
    return missing if value is None else value.strip() == "1"


def probe_host(data_root: Path) -> HostFacts:
    uname = os.uname()
    name, version = os_release()
    return HostFacts(
        hostname=uname.nodename,
        kernel_version=uname.release,
        operating_system=name,
        os_version=version,
        architecture=uname.machine,
        # Go's runtime.NumCPU counts the CPUs this process may run on.
        ncpu=len(os.sched_getaffinity(0)),
        mem_total=mem_total(),
        open_fds=len(os.listdir("/proc/self/fd")),
        cgroups=cgroup_info(),
        ipv4_forwarding=_sysctl_on("/proc/sys/net/ipv4/ip_forward"),
        # Without br_netfilter loaded the files are absent and dockerd does not warn.
        bridge_nf_iptables=_sysctl_on("/proc/sys/net/bridge/bridge-nf-call-iptables", missing=True),
        bridge_nf_ip6tables=_sysctl_on("/proc/sys/net/bridge/bridge-nf-call-ip6tables", missing=True),
        backing_filesystem=backing_filesystem(data_root),
    )


def masked_proxy(value: str) -> str:
    """dockerd's MaskCredentials: keep the user name, hide the password."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    netloc = f"{parts.username}:xxxxx@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def proxy_env(name: str) -> str:
    return masked_proxy(os.environ.get(name.upper()) or os.environ.get(name.lower()) or "")


async def tool_version(program: str, timeout: float = 5.0) -> ToolVersion | None:
    """Run ``program --version``; None when it is missing or fails."""
    path = shutil.which(program)
    if path is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    if proc.returncode != 0:
        return None
    return parse_tool_version(path, out.decode(errors="replace"))


def parse_tool_version(path: str, text: str) -> ToolVersion:
    """``runc version 1.1.5\\ncommit: abc`` (runc) or ``tini version 0.19.0 - git.de40ad0`` (init)."""
    version, commit = "", ""
    for line in text.splitlines():
        line = line.strip()
        if " version " in line and not version:
            rest = line.split(" version ", 1)[1]
            version, _, tail = rest.partition(" - ")
            if tail.startswith("git."):
                commit = tail.removeprefix("git.")
        elif line.startswith("commit:"):
            commit = line.removeprefix("commit:").strip()
    return ToolVersion(path=path, version=version.strip(), commit=commit)
