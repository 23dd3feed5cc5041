"""One resource-usage sample of a container, read from its cgroup and /proc, in Docker's shapes.

dockerd gets these figures from containerd's cgroup metrics and rebuilds them into its stats JSON
(daemon/stats_unix.go statsV1/statsV2); this module reads the same files and returns the same
sections, with the same quirks, so the engine only adds names, times and the previous sample:

- v1: the eight blkio lists come from the CFQ ``*_recursive`` files when the kernel has them, else
  only the two throttle counters (``blkio.throttle.io_serviced``/``io_service_bytes``, not
  recursive), as containerd does; the others stay empty. ``memory_stats.stats`` holds dockerd's
  fixed v1 key set, not every memory.stat line.
- v2: no ``percpu_usage``, ``max_usage`` or ``failcnt``; ``io.stat`` gives lower-case read/write
  byte entries only; ``memory.max`` "max" is the largest uint64 (the engine clamps it).
- The host's ``system_cpu_usage`` is /proc/stat's first line (user to softirq, steal excluded) in
  nanoseconds, as dockerd computes it; ``online_cpus`` counts the ``cpuN`` lines.
- Networks: /proc/<pid>/net/dev lists the interfaces of the process's network namespace.

Everything here is a small synchronous sysfs/procfs read; the engine calls it in a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runtime.cgroups import CgroupLayout, parse_flat_keyed, parse_limit, read_int, read_text

UINT64_MAX = 2**64 - 1
BLKIO_LISTS = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)
# Stats list -> the CFQ file it comes from (blkio.<name>), in containerd's order.
_CFQ_FILES = {
    "sectors_recursive": "sectors_recursive",
    "io_service_bytes_recursive": "io_service_bytes_recursive",
    "io_serviced_recursive": "io_serviced_recursive",
    "io_queue_recursive": "io_queued_recursive",
    "io_service_time_recursive": "io_service_time_recursive",
    "io_wait_time_recursive": "io_wait_time_recursive",
    "io_merged_recursive": "io_merged_recursive",
    "io_time_recursive": "time_recursive",
}
_THROTTLE_FILES = {
    "io_serviced_recursive": "throttle.io_serviced",
    "io_service_bytes_recursive": "throttle.io_service_bytes",
}
# dockerd's v1 memory_stats.stats keys: the memory.stat fields containerd's metrics carry.
V1_MEMORY_KEYS = (
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
)
# dockerd's v2 memory_stats.stats keys (containerd's cgroup v2 MemoryStat).
V2_MEMORY_KEYS = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)
NET_FIELDS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)
# /proc/net/dev columns (after the name) that NET_FIELDS take: bytes packets errs drop, per direction.
_NET_COLUMNS = (0, 1, 2, 3, 8, 9, 10, 11)
# Devices the kernel puts in every namespace once their module is loaded; never an endpoint.
_FALLBACK_DEVICES = frozenset(
    {"lo", "tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0", "ip6gre0"}
)


# --- pure parsers ------------------------------------------------------------------------------


def parse_blkio_entries(text: str) -> list[dict[str, Any]]:
    """A v1 blkio file: "8:0 Read 4096" lines, or "8:0 4096" (sectors, time: no op).

    The closing "Total N" line is skipped; per-device "Total" lines are kept, as containerd does.
    """
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) not in (3, 4) or not (fields[0].isdigit() and fields[1].isdigit()):
            continue
        op = fields[2] if len(fields) == 4 else ""
        try:
            value = int(fields[-1])
        except ValueError:
            continue
        entries.append({"major": int(fields[0]), "minor": int(fields[1]), "op": op, "value": value})
    return entries


def parse_io_stat(text: str) -> list[dict[str, Any]] | None:
    """v2 io.stat → read/write byte entries per device; None (Go's nil) when there is none."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        values = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        for op, key in (("read", "rbytes"), ("write", "wbytes")):
            entries.append(
                {"major": int(major), "minor": int(minor), "op": op, "value": int(values.get(key, 0))}
            )
    return entries or None


def parse_proc_stat(text: str, clock_ticks: int = 100) -> tuple[int, int]:
    """(system_cpu_usage in ns, online cpus) from /proc/stat, as dockerd's getSystemCPUUsage."""
    usage = cpus = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        if fields[0] == "cpu":
            if len(fields) < 8:
                raise ValueError("invalid number of cpu fields")
            ticks = sum(int(v) for v in fields[1:8])
            usage = ticks * 1_000_000_000 // clock_ticks
        else:
            cpus += 1
    return usage, cpus


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/<pid>/net/dev → Docker's per-interface counters, the namespace's fallback devices left out."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or name in _FALLBACK_DEVICES:
            continue
        columns = rest.split()
        if len(columns) < 12:
            continue
        out[name] = {key: int(columns[i]) for key, i in zip(NET_FIELDS, _NET_COLUMNS, strict=True)}
    return out


# --- readers -----------------------------------------------------------------------------------


def _omit_zero(section: dict[str, Any]) -> dict[str, Any]:
    """Go's omitempty on integer fields."""
    return {k: v for k, v in section.items() if v}


def read_system_cpu(proc: Path = Path("/proc")) -> tuple[int, int]:
    return parse_proc_stat((proc / "stat").read_text(), os.sysconf("SC_CLK_TCK"))


def read_networks(pid: int, proc: Path = Path("/proc")) -> dict[str, dict[str, int]] | None:
    """Interface counters of ``pid``'s network namespace; None once the process is gone."""
    text = read_text(proc / str(pid) / "net" / "dev")
    return None if text is None else parse_net_dev(text)


def read_cgroup(layout: CgroupLayout, path: str) -> dict[str, Any] | None:
    """pids_stats, blkio_stats, cpu_stats, memory_stats of cgroup ``path``; None if it is gone."""
    if layout.version == 1:
        return _read_v1(layout, path)
    return _read_v2(layout, path)


def _read_v1(layout: CgroupLayout, path: str) -> dict[str, Any] | None:
    acct = layout.dir("cpuacct", path)
    total = read_int(acct / "cpuacct.usage") if acct is not None else None
    if acct is None or total is None:
        return None
    ticks = parse_flat_keyed(read_text(acct / "cpuacct.stat") or "")
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    cpu_usage: dict[str, Any] = {"total_usage": total}
    percpu = [int(x) for x in (read_text(acct / "cpuacct.usage_percpu") or "").split()]
    if percpu:
        cpu_usage["percpu_usage"] = percpu
    cpu_usage["usage_in_kernelmode"] = ticks.get("system", 0) * tick_ns
    cpu_usage["usage_in_usermode"] = ticks.get("user", 0) * tick_ns
    cpu_dir = layout.dir("cpu", path)
    throttle = parse_flat_keyed(read_text(cpu_dir / "cpu.stat") or "") if cpu_dir is not None else {}
    out: dict[str, Any] = {
        "pids_stats": _pids(layout.dir("pids", path)),
        "blkio_stats": _blkio_v1(layout.dir("blkio", path)),
        "cpu_stats": {
            "cpu_usage": cpu_usage,
            "throttling_data": {
                "periods": throttle.get("nr_periods", 0),
                "throttled_periods": throttle.get("nr_throttled", 0),
                "throttled_time": throttle.get("throttled_time", 0),
            },
        },
        "memory_stats": {},
    }
    mem = layout.dir("memory", path)
    if mem is not None:
        raw = parse_flat_keyed(read_text(mem / "memory.stat") or "")
        memory: dict[str, Any] = {
            "usage": read_int(mem / "memory.usage_in_bytes") or 0,
            "max_usage": read_int(mem / "memory.max_usage_in_bytes") or 0,
            "stats": {key: raw.get(key, 0) for key in V1_MEMORY_KEYS},
            "failcnt": read_int(mem / "memory.failcnt") or 0,
            "limit": read_int(mem / "memory.limit_in_bytes") or 0,
        }
        out["memory_stats"] = {k: v for k, v in memory.items() if v or k == "stats"}
    return out


def _blkio_v1(directory: Path | None) -> dict[str, Any]:
    lists: dict[str, Any] = {name: [] for name in BLKIO_LISTS}
    if directory is None:
        return lists
    files = _CFQ_FILES if (directory / "blkio.io_serviced_recursive").exists() else _THROTTLE_FILES
    for name, file in files.items():
        lists[name] = parse_blkio_entries(read_text(directory / f"blkio.{file}") or "")
    return lists


def _pids(directory: Path | None) -> dict[str, int]:
    if directory is None:
        return {}
    limit_text = read_text(directory / "pids.max")
    limit = parse_limit(limit_text) if limit_text else None
    return _omit_zero({"current": read_int(directory / "pids.current") or 0, "limit": limit or 0})


def _read_v2(layout: CgroupLayout, path: str) -> dict[str, Any] | None:
    directory = layout.dir("memory", path)
    if directory is None or not directory.is_dir():
        return None
    cpu = parse_flat_keyed(read_text(directory / "cpu.stat") or "")
    out: dict[str, Any] = {
        "pids_stats": _pids(directory),
        "blkio_stats": {
            name: (parse_io_stat(read_text(directory / "io.stat") or "") if name == BLKIO_LISTS[0] else None)
            for name in BLKIO_LISTS
        },
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": cpu.get("usage_usec", 0) * 1000,
                "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
                "usage_in_usermode": cpu.get("user_usec", 0) * 1000,
            },
            "throttling_data": {
                "periods": cpu.get("nr_periods", 0),
                "throttled_periods": cpu.get("nr_throttled", 0),
                "throttled_time": cpu.get("throttled_usec", 0) * 1000,
            },
        },
        "memory_stats": {},
    }
    usage = read_int(directory / "memory.current")
    if usage is not None:
        raw = parse_flat_keyed(read_text(directory / "memory.stat") or "")
        limit_text = read_text(directory / "memory.max")
        limit = parse_limit(limit_text) if limit_text else None
        memory: dict[str, Any] = {
            "usage": usage,
            "stats": {key: raw.get(key, 0) for key in V2_MEMORY_KEYS},
            "limit": UINT64_MAX if limit is None else limit,
        }
        out["memory_stats"] = {k: v for k, v in memory.items() if v or k == "stats"}
    return out
