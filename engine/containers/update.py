"""``docker update``: validate an UpdateConfig, merge it into HostConfig, derive the live limits.

Pure functions with dockerd's rules and texts: ``validate`` is verifyPlatformContainerResources
with ``update=true`` (so a swap limit alone is allowed), ``merge`` is container.UpdateContainer
(zero values mean "leave as is"; NanoCpus and CpuPeriod/CpuQuota exclude each other across the
old and new settings), ``live_resources`` is toContainerdResources: the OCI ``linux.resources``
that ``runc update`` applies to a running container.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine import errdefs
from engine.containers import createconfig, resources

MIN_MEMORY = 6 * 1024 * 1024
INT_FIELDS = (
    "BlkioWeight", "CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod",
    "CpuRealtimeRuntime", "Memory", "MemorySwap", "MemoryReservation", "KernelMemory",
)  # fmt: skip
STRING_FIELDS = ("CpusetCpus", "CpusetMems")
# Fields container.UpdateContainer copies when non-zero (Memory/MemorySwap have their own rules).
_PLAIN_FIELDS = ("BlkioWeight", "CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota", "CpusetCpus", "CpusetMems")
_LIVE_MEMORY_KEYS = ("limit", "reservation", "swap")
_GO_TYPES = {"BlkioWeight": "uint16"}
_ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
_ONLINE_MEMS = Path("/sys/devices/system/node/online")


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return f"number {value}"


def _type_error(field: str, value: Any, go_type: str) -> errdefs.InvalidParameter:
    return errdefs.InvalidParameter(
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
        f"UpdateConfig.{field} of type {go_type}"
    )


def normalize(body: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateConfig fields of ``body`` (keys matched case-insensitively, as Go decodes), typed."""
    by_lower = {str(k).lower(): v for k, v in body.items()}
    out: dict[str, Any] = {}
    for field in INT_FIELDS:
        value = by_lower.get(field.lower())
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(field, value, _GO_TYPES.get(field, "int64"))
        out[field] = value
    for field in STRING_FIELDS:
        value = by_lower.get(field.lower())
        if value is None:
            continue
        if not isinstance(value, str):
            raise _type_error(field, value, "string")
        out[field] = value
    if "pidslimit" in by_lower and by_lower["pidslimit"] is not None:
        value = by_lower["pidslimit"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error("PidsLimit", value, "int64")
        # The router turns 0 and negatives into "unlimited" (stored as 0) since API 1.41.
        out["PidsLimit"] = max(value, 0)
    policy = by_lower.get("restartpolicy")
    if policy is not None:
        if not isinstance(policy, dict):
            raise _type_error("RestartPolicy", policy, "container.RestartPolicy")
        p = {str(k).lower(): v for k, v in policy.items()}
        name, count = p.get("name") or "", p.get("maximumretrycount") or 0
        if not isinstance(name, str):
            raise _type_error("RestartPolicy.Name", name, "container.RestartPolicyMode")
        if isinstance(count, bool) or not isinstance(count, int):
            raise _type_error("RestartPolicy.MaximumRetryCount", count, "int")
        out["RestartPolicy"] = {"Name": name, "MaximumRetryCount": count}
    return out


def _uint_list(text: str) -> list[tuple[int, int]] | None:
    """parsers.ParseUintList as ranges; None when the syntax is invalid."""
    if text == "":
        return []
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not re.fullmatch(r"[+-]?\d+", low) or (dash and not re.fullmatch(r"[+-]?\d+", high)):
            return None
        start, end = int(low), int(high) if dash else int(low)
        if end < start:
            return None
        ranges.append((start, end))
    return ranges


def _online(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _check_cpuset(value: str, kind: str, available_text: str) -> None:
    requested = _uint_list(value)
    if requested is None:
        raise errdefs.InvalidParameter(f"Invalid value {value} for cpuset {kind}: invalid format: {value}")
    available = _uint_list(available_text) or []
    for start, end in requested:
        if not any(lo <= start and end <= hi for lo, hi in available):
            label = "CPUs" if kind == "cpus" else "memory nodes"
            raise errdefs.InvalidParameter(
                f"Requested {label} are not available - requested {value}, available: {available_text}"
            )


def validate(update: Mapping[str, Any]) -> None:
    """verifyContainerSettings for an update (dockerd's order and texts); 400 on a refusal."""
    memory = update.get("Memory", 0)
    swap = update.get("MemorySwap", 0)
    reservation = update.get("MemoryReservation", 0)
    nano, period, quota = update.get("NanoCpus", 0), update.get("CpuPeriod", 0), update.get("CpuQuota", 0)
    if memory != 0 and memory < MIN_MEMORY:
        raise errdefs.InvalidParameter("Minimum memory limit allowed is 6MB")
    if memory > 0 and swap > 0 and swap < memory:
        raise errdefs.InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage"
        )
    if reservation > 0 and reservation < MIN_MEMORY:
        raise errdefs.InvalidParameter("Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise errdefs.InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage"
        )
    if nano > 0 and period > 0:
        raise errdefs.InvalidParameter("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if nano > 0 and quota > 0:
        raise errdefs.InvalidParameter("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if nano != 0:
        ncpu = os.cpu_count() or 1
        if nano < 0 or nano > ncpu * 10**9:
            raise errdefs.InvalidParameter(
                f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
            )
    if period != 0 and not 1000 <= period <= 1_000_000:
        raise errdefs.InvalidParameter(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
        )
    if quota > 0 and quota < 1000:
        raise errdefs.InvalidParameter("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if update.get("CpusetCpus"):
        _check_cpuset(update["CpusetCpus"], "cpus", _online(_ONLINE_CPUS))
    if update.get("CpusetMems"):
        _check_cpuset(update["CpusetMems"], "mems", _online(_ONLINE_MEMS))
    weight = update.get("BlkioWeight", 0)
    if weight > 0 and not 10 <= weight <= 1000:
        raise errdefs.InvalidParameter("Range of blkio weight is from 10 to 1000")
    if "RestartPolicy" in update:
        createconfig.validate_host_config({"RestartPolicy": update["RestartPolicy"]})


def _conflict(message: str) -> errdefs.Conflict:
    return errdefs.Conflict(message)


def current_swap(hc: Mapping[str, Any]) -> int:
    """The swap limit dockerd would have stored: create sets it to twice the memory when unset."""
    swap = int(hc.get("MemorySwap") or 0)
    memory = int(hc.get("Memory") or 0)
    if swap == 0 and memory > 0:
        return memory * 2
    return swap


def merge(hc: dict[str, Any], update: Mapping[str, Any]) -> None:
    """container.UpdateContainer: apply ``update`` to HostConfig ``hc`` in place, or raise Conflict."""
    if update.get("NanoCpus", 0) > 0 and (hc.get("CpuPeriod") or 0) > 0:
        raise _conflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if update.get("NanoCpus", 0) > 0 and (hc.get("CpuQuota") or 0) > 0:
        raise _conflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if update.get("CpuPeriod", 0) > 0 and (hc.get("NanoCpus") or 0) > 0:
        raise _conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if update.get("CpuQuota", 0) > 0 and (hc.get("NanoCpus") or 0) > 0:
        raise _conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    for field in _PLAIN_FIELDS:
        if update.get(field):
            hc[field] = update[field]
    memory, swap = update.get("Memory", 0), update.get("MemorySwap", 0)
    if memory != 0:
        had_swap = current_swap(hc)
        if memory > had_swap and swap == 0:
            raise _conflict(
                "Memory limit should be smaller than already set memoryswap limit, "
                "update the memoryswap at the same time"
            )
        hc["Memory"] = memory
        hc["MemorySwap"] = had_swap  # keep what create worked out, not twice the new memory
    if swap != 0:
        hc["MemorySwap"] = swap
    for field in ("MemoryReservation", "KernelMemory", "CpuRealtimePeriod", "CpuRealtimeRuntime"):
        if update.get(field):
            hc[field] = update[field]
    if "PidsLimit" in update:
        hc["PidsLimit"] = update["PidsLimit"]
    policy = update.get("RestartPolicy")
    if policy and policy.get("Name"):
        if hc.get("AutoRemove") and policy["Name"] != "no":
            raise _conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container"
            )
        hc["RestartPolicy"] = dict(policy)


def live_resources(hc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``linux.resources`` ``runc update`` gets for HostConfig ``hc`` (toContainerdResources)."""
    out: dict[str, Any] = {}
    memory = {k: v for k, v in resources.memory_resources(hc).items() if k in _LIVE_MEMORY_KEYS}
    if memory:
        out["memory"] = memory
    cpu = resources.cpu_resources(hc)
    if cpu:
        out["cpu"] = cpu
    pids = resources.pids_limit(hc)
    if pids is not None:
        out["pids"] = pids
    if hc.get("BlkioWeight"):
        out["blockIO"] = {"weight": int(hc["BlkioWeight"])}
    return out
