"""linux.resources from HostConfig: device cgroup, memory, CPU, pids and blkio weight.

Facts from moby's daemon_unix.go (getMemoryResources, getCPUResources, getPidsLimit) and
oci.DefaultLinuxSpec (the device allow-list). Empty sub-objects are omitted as dockerd omits them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine import errdefs
from engine.containers.devices import DeviceSpec

CFS_PERIOD_US = 100_000  # 100ms, the scheduler's default bandwidth period (sched-bwc.txt)

_CGROUP_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})")


def default_device_rules() -> list[dict[str, Any]]:
    """Deny everything, then allow null, zero, full, random, urandom, tty, ptmx and /dev/pts/*.

    /dev/fuse (10:229) is denied explicitly: it used to be allowed and the deny stays listed.
    The nodes themselves are created by runc, not listed in linux.devices.
    """

    def allow(major: int, minor: int) -> dict[str, Any]:
        return {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}

    return [
        {"allow": False, "access": "rwm"},
        allow(1, 5),
        allow(1, 3),
        allow(1, 9),
        allow(1, 8),
        allow(5, 0),
        allow(5, 1),
        {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
    ]


def parse_device_cgroup_rule(rule: str) -> dict[str, Any]:
    """``c 1:3 rwm`` / ``a`` (--device-cgroup-rule) to a linux.resources.devices entry."""
    text = "a *:* rwm" if rule == "a" else rule
    match = _CGROUP_RULE.fullmatch(text)
    if not match:
        raise errdefs.Internal(f"invalid device cgroup rule format: '{rule}'")
    kind, major, minor, access = match.groups()
    return {
        "allow": True,
        "type": kind,
        "major": -1 if major == "*" else int(major),
        "minor": -1 if minor == "*" else int(minor),
        "access": access,
    }


def device_rules(
    devices: Sequence[DeviceSpec], privileged: bool, cgroup_rules: Sequence[str] | None
) -> list[dict[str, Any]]:
    if privileged:
        return [{"allow": True, "access": "rwm"}]
    rules = default_device_rules() + [d.cgroup_rule() for d in devices]
    return rules + [parse_device_cgroup_rule(r) for r in cgroup_rules or ()]


def memory_resources(hc: Mapping[str, Any]) -> dict[str, Any]:
    memory = int(hc.get("Memory") or 0)
    reservation = int(hc.get("MemoryReservation") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    if memory > 0 and swap == 0:
        # dockerd fills this in at create (adaptContainerSettings); repeated for records that lack it.
        swap = memory * 2
    out: dict[str, Any] = {}
    if memory > 0:
        out["limit"] = memory
    if reservation > 0:
        out["reservation"] = reservation
    if swap > 0:  # -1 means unlimited and is simply left out
        out["swap"] = swap
    swappiness = hc.get("MemorySwappiness")
    if swappiness is not None and swappiness != -1:  # -1 is "unset" (fixMemorySwappiness)
        out["swappiness"] = int(swappiness)
    if hc.get("OomKillDisable") is not None:
        out["disableOOMKiller"] = bool(hc["OomKillDisable"])
    return out


def cpu_resources(hc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shares = int(hc.get("CpuShares") or 0)
    if shares < 0:
        raise errdefs.Internal(f"invalid CPU shares ({shares}): value must be a positive integer")
    if shares:
        out["shares"] = shares
    nano = int(hc.get("NanoCpus") or 0)
    if nano > 0:
        out["quota"] = nano * CFS_PERIOD_US // 1_000_000_000
        out["period"] = CFS_PERIOD_US
    if hc.get("CpuQuota"):
        out["quota"] = int(hc["CpuQuota"])
    if hc.get("CpuPeriod"):
        out["period"] = int(hc["CpuPeriod"])
    if hc.get("CpuRealtimeRuntime"):
        out["realtimeRuntime"] = int(hc["CpuRealtimeRuntime"])
    if hc.get("CpuRealtimePeriod"):
        out["realtimePeriod"] = int(hc["CpuRealtimePeriod"])
    if hc.get("CpusetCpus"):
        out["cpus"] = str(hc["CpusetCpus"])
    if hc.get("CpusetMems"):
        out["mems"] = str(hc["CpusetMems"])
    return out


def pids_limit(hc: Mapping[str, Any]) -> dict[str, Any] | None:
    limit = hc.get("PidsLimit")
    if limit is None:
        return None
    # The API treats 0 and negatives as "unlimited"; runc spells that -1.
    return {"limit": -1 if int(limit) <= 0 else int(limit)}


def linux_resources(hc: Mapping[str, Any], devices: Sequence[DeviceSpec], privileged: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": device_rules(devices, privileged, hc.get("DeviceCgroupRules"))}
    memory = memory_resources(hc)
    if memory:
        out["memory"] = memory
    cpu = cpu_resources(hc)
    if cpu:
        out["cpu"] = cpu
    pids = pids_limit(hc)
    if pids:
        out["pids"] = pids
    # dockerd always emits the weight (0 = unset); per-device blkio throttles need host stat()s
    # of the named devices and are not supported yet.
    out["blockIO"] = {"weight": int(hc.get("BlkioWeight") or 0)}
    return out
