"""Linux capability sets as dockerd computes them (--cap-add, --cap-drop, --privileged).

Facts from moby's daemon/pkg/oci/caps and containerd's pkg/cap: the 14 default capabilities,
``ALL`` as a magic value, names accepted with or without ``CAP_`` in any case, and "all" meaning
every known capability that the daemon itself holds in its effective set.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from engine import errdefs
from engine.containers import gofmt

# Kernel order (capability number = index), as containerd's pkg/cap lists them up to kernel 5.9.
KNOWN_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# Docker's defaults, in dockerd's order (the order shows up verbatim in config.json).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

ALL = "ALL"


def capabilities_from_mask(mask: int) -> tuple[str, ...]:
    """Known capability names whose bit is set, lowest bit first (unknown bits are ignored)."""
    return tuple(name for bit, name in enumerate(KNOWN_CAPABILITIES) if mask >> bit & 1)


def parse_cap_eff(status_text: str) -> int | None:
    """The CapEff bitmap from /proc/<pid>/status text, or None when absent or malformed."""
    for line in status_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                return None
    return None


@functools.cache
def current_capabilities() -> tuple[str, ...]:
    """What "all capabilities" means here: the daemon's own effective set.

    dockerd does the same (caps.GetAllCapabilities): a privileged container cannot hold a
    capability the daemon lacks, and asking for one gives the "not supported" error below.
    Falls back to every known capability when /proc is unreadable, as dockerd does.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            mask = parse_cap_eff(status.read())
    except OSError:
        mask = None
    return KNOWN_CAPABILITIES if mask is None else capabilities_from_mask(mask)


def normalize_capabilities(caps: Iterable[str], available: Sequence[str] | None = None) -> list[str]:
    """Upper-case, add ``CAP_``, keep ``ALL``; reject unknown or unavailable names (InvalidParameter)."""
    have = current_capabilities() if available is None else available
    out: list[str] = []
    for raw in caps:
        cap = raw.upper()
        if cap == ALL:
            out.append(cap)
            continue
        if not cap.startswith("CAP_"):
            cap = "CAP_" + cap
        if cap not in KNOWN_CAPABILITIES:
            raise errdefs.InvalidParameter(f"unknown capability: {gofmt.quote(cap)}")
        if cap not in have:
            raise errdefs.InvalidParameter(
                "capability not supported by your kernel or not available in the current environment: "
                + gofmt.quote(cap)
            )
        out.append(cap)
    return out


def validate_capabilities(cap_add: Sequence[str] | None, cap_drop: Sequence[str] | None) -> None:
    """Create-time check (dockerd answers 400 ``invalid CapAdd: unknown capability: "CAP_FOO"``)."""
    for field, caps in (("CapAdd", cap_add), ("CapDrop", cap_drop)):
        try:
            normalize_capabilities(caps or ())
        except errdefs.InvalidParameter as err:
            raise errdefs.InvalidParameter(f"invalid {field}: {err.message}") from err


def tweak_capabilities(
    basics: Sequence[str],
    adds: Sequence[str] | None,
    drops: Sequence[str] | None,
    privileged: bool,
    available: Sequence[str] | None = None,
) -> list[str]:
    """The capability list for a container, with dockerd's precedence rules.

    privileged wins outright; ``--cap-add ALL`` keeps everything not dropped; ``--cap-drop ALL``
    keeps only what is added; otherwise drop from the defaults, then append the additions
    (duplicates are kept, as dockerd keeps them; runc folds them into one bit).
    """
    have = list(current_capabilities() if available is None else available)
    if privileged:
        return have
    if not adds and not drops:
        return list(basics)
    cap_drop = normalize_capabilities(drops or (), have)
    cap_add = normalize_capabilities(adds or (), have)
    if ALL in cap_add:
        return [c for c in have if c not in cap_drop]
    if ALL in cap_drop:
        return cap_add
    return [c for c in basics if c not in cap_drop] + cap_add


def capability_sets(caplist: Sequence[str], uid: int) -> dict[str, list[str]]:
    """process.capabilities for a given user.

    For a non-root user dockerd sets only the bounding set: execve() as non-root clears the
    effective and permitted sets anyway, and Docker never raises ambient capabilities.
    """
    if uid == 0:
        return {"bounding": list(caplist), "effective": list(caplist), "permitted": list(caplist)}
    return {"bounding": list(caplist)}
