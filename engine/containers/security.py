"""Security-related spec inputs: --security-opt, masked/read-only /proc paths, and sysctls.

Sysctls are checked here with runc's own rules (libcontainer/configs/validate) so that a bad
``--sysctl`` fails with the exact text dockerd 28 relays from runc at start (a 500), whatever
runc version is installed: e.g. ``sysctl "net.ipv4.ip_forward" not allowed in host network
namespace``. The CLI refuses non-namespaced sysctls itself; the API does not, so runc's rule is
what API clients see.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from engine import errdefs
from engine.containers import gofmt

# How dockerd 28 (containerd shim + runc) wraps a runc create failure; the trailing ": unknown"
# is the gRPC code containerd attaches.
RUNC_CREATE_FAILED = (
    "failed to create task for container: failed to create shim task: "
    "OCI runtime create failed: runc create failed: "
)

READONLY_PATHS: tuple[str, ...] = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",  # GHSA-6fw5-f8r9-fgfm
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",  # GHSA-jq35-85cj-fj4p
    "/sys/firmware",
)

# Namespaced by the IPC namespace (runc's list, plus any fs.mqueue.*).
_IPC_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True)
class SecurityOptions:
    no_new_privileges: bool = False
    writable_cgroups: bool | None = None
    seccomp_profile: str = ""
    apparmor_profile: str = ""
    label_opts: tuple[str, ...] = ()


def parse_security_opt(opts: Sequence[str] | None) -> SecurityOptions:
    """HostConfig.SecurityOpt as dockerd's parseSecurityOpt reads it.

    Errors are errdefs.Internal: the reference dockerd answers 500 for them at create.
    """
    nnp, writable, seccomp, apparmor = False, None, "", ""
    labels: list[str] = []
    for opt in opts or ():
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "writable-cgroups":
            writable = True
            continue
        if opt == "disable":
            labels.append("disable")
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else ""
        if not sep:
            raise errdefs.Internal(f"invalid --security-opt 1: {gofmt.quote(opt)}")
        key, _, value = opt.partition(sep)
        if key == "label":
            labels.append(value)
        elif key == "apparmor":
            apparmor = value
        elif key == "seccomp":
            seccomp = value
        elif key in ("no-new-privileges", "writable-cgroups"):
            if value not in _GO_TRUE and value not in _GO_FALSE:
                raise errdefs.Internal(f"invalid --security-opt 2: {gofmt.quote(opt)}")
            if key == "no-new-privileges":
                nnp = value in _GO_TRUE
            else:
                writable = value in _GO_TRUE
        else:
            raise errdefs.Internal(f"invalid --security-opt 2: {gofmt.quote(opt)}")
    return SecurityOptions(nnp, writable, seccomp, apparmor, tuple(labels))


def _possible_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


@functools.cache
def default_masked_paths() -> tuple[str, ...]:
    """Docker's masked paths; per-CPU thermal_throttle dirs are added where the host has them."""
    try:
        with open("/sys/devices/system/cpu/possible", encoding="ascii") as f:
            cpus = _possible_cpus(f.read())
    except OSError:
        cpus = []
    throttle = [f"/sys/devices/system/cpu/cpu{n}/thermal_throttle" for n in cpus]
    return _MASKED_PATHS + tuple(p for p in throttle if os.path.exists(p))


def default_sysctls() -> dict[str, str]:
    """Set by dockerd when the container gets its own network namespace.

    They grant what CAP_NET_RAW / CAP_NET_BIND_SERVICE already allow (ping sockets, ports < 1024),
    so non-root processes behave like root there. Both exist on every kernel runc supports.
    """
    return {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}


def validate_sysctls(sysctls: Mapping[str, str], *, ipc_ns: bool, net_ns: bool, uts_ns: bool) -> None:
    """runc's sysctl rule, raised as dockerd 28 reports it (errdefs.Internal, 500 at start)."""
    for key in sysctls:
        name = key.replace("/", ".")  # runc accepts either separator
        reason = None
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if not ipc_ns:
                reason = f"sysctl {gofmt.quote(key)} is not allowed in the hosts ipc namespace"
        elif name.startswith("net."):
            if not net_ns:
                reason = f"sysctl {gofmt.quote(key)} not allowed in host network namespace"
        elif uts_ns and name == "kernel.domainname":
            pass
        elif uts_ns and name == "kernel.hostname":
            reason = f'sysctl {gofmt.quote(key)} is not allowed as it conflicts with the OCI "hostname" field'
        else:
            reason = f"sysctl {gofmt.quote(key)} is not in a separate kernel namespace"
        if reason:
            raise errdefs.Internal(f"{RUNC_CREATE_FAILED}{reason}: unknown")
