"""What the daemon reads from a container's cgroup: stats, OOM kills, freezer state.

runc creates and removes the cgroups; this module only picks the path the spec should use
(cgroupfs driver, like dockerd's "/docker/<id>") and reads files. It supports cgroup v1
(including the hybrid layout, v1 controllers under /sys/fs/cgroup/<ctrl> and an empty v2 at
/sys/fs/cgroup/unified) and pure v2. The layout comes from /proc/self/mountinfo, since
distributions mount v1 controllers jointly ("cpu,cpuacct") or separately.

Stats come back as plain dicts already in the shape of Docker's stats JSON sections
(cpu_stats, memory_stats, blkio_stats, pids_stats) with the per-version differences Docker
has (v2: no percpu_usage, max_usage, failcnt from memory.events "oom", lower-case blkio ops).
Host-wide figures (system_cpu_usage, online_cpus, the machine-memory clamp of an unlimited
limit) are the engine's to add. All functions are synchronous, small sysfs reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PARENT = "/skiff"
# Super-block options of a v1 cgroup mount that are not controllers.
_V1_FLAGS = frozenset({"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"})


def cgroups_path(container_id: str, parent: str = DEFAULT_PARENT) -> str:
    """linux.cgroupsPath for the cgroupfs driver: absolute, so runc roots it at each hierarchy."""
    if not parent.startswith("/"):
        raise ValueError(f"cgroup parent must be absolute: {parent!r}")
    return f"{parent.rstrip('/')}/{container_id}"


@dataclass(frozen=True)
class CgroupLayout:
    """Where the hierarchies are mounted. ``v1`` maps each v1 controller to its mount point."""

    v1: Mapping[str, Path] = field(default_factory=dict)
    unified: Path | None = None

    @property
    def version(self) -> int:
        return 1 if self.v1 else 2

    @classmethod
    def detect(cls) -> CgroupLayout:
        with open("/proc/self/mountinfo") as f:
            return cls.from_mountinfo(f.read())

    @classmethod
    def from_mountinfo(cls, text: str) -> CgroupLayout:
        v1: dict[str, Path] = {}
        unified: Path | None = None
        for line in text.splitlines():
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            before, after = left.split(), right.split()
            if len(before) < 5 or len(after) < 3 or before[3] != "/":
                continue  # a bind of a sub-cgroup (e.g. inside a container) maps paths differently
            mountpoint = Path(_unescape(before[4]))
            if after[0] == "cgroup2" and unified is None:
                unified = mountpoint
            elif after[0] == "cgroup":
                for option in after[2].split(","):
                    if option.startswith("name=") or ("=" not in option and option not in _V1_FLAGS):
                        v1.setdefault(option, mountpoint)
        return cls(v1=v1, unified=unified)

    def dir(self, controller: str, path: str) -> Path | None:
        """The directory of cgroup ``path`` for ``controller``; v2 has one for all controllers."""
        relative = path.lstrip("/")
        if controller in self.v1:
            return self.v1[controller] / relative
        if self.version == 2 and self.unified is not None:
            return self.unified / relative
        return None

    def all_dirs(self, path: str) -> list[Path]:
        relative = path.lstrip("/")
        dirs = {mount / relative for mount in self.v1.values()}
        if self.unified is not None:
            dirs.add(self.unified / relative)
        return sorted(dirs)


def _unescape(field_text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    out, i = [], 0
    while i < len(field_text):
        if field_text[i] == "\\" and field_text[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


# --- parsers (pure) ---------------------------------------------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                out[parts[0]] = int(parts[1])
    return out


def parse_limit(text: str) -> int | None:
    """A v2 limit file: a number, or "max" for none."""
    value = text.strip()
    return None if value == "max" else int(value)


def parse_blkio_v1(text: str) -> list[dict[str, Any]]:
    """blkio.*_recursive: "8:0 Read 4096" per line; the trailing "Total N" summary is skipped."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or ":" not in parts[0]:
            continue
        major, minor = parts[0].split(":")
        entries.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
    return entries


def parse_io_stat_v2(text: str) -> list[dict[str, Any]]:
    """io.stat: "8:0 rbytes=1 wbytes=2 rios=3 ..." → Docker's read/write byte entries."""
    entries: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, minor = (int(x) for x in parts[0].split(":"))
        values = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        for op, key in (("read", "rbytes"), ("write", "wbytes")):
            entries.append({"major": major, "minor": minor, "op": op, "value": int(values.get(key, 0))})
    return entries


# --- readers -----------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def oom_kill_count(layout: CgroupLayout, path: str) -> int | None:
    """How many processes the OOM killer killed in the cgroup; None if unreadable (gone)."""
    directory = layout.dir("memory", path)
    if directory is None:
        return None
    name = "memory.oom_control" if "memory" in layout.v1 else "memory.events"
    text = _read(directory / name)
    if text is None:
        return None
    return parse_flat_keyed(text).get("oom_kill")


def freezer_state(layout: CgroupLayout, path: str) -> str | None:
    """Freezer state: "FROZEN", "FREEZING" or "THAWED" (v2's cgroup.events "frozen" is mapped)."""
    directory = layout.dir("freezer", path)
    if directory is None:
        return None
    if "freezer" in layout.v1:
        text = _read(directory / "freezer.state")
        return None if text is None else text.strip()
    text = _read(directory / "cgroup.events")
    if text is None:
        return None
    return "FROZEN" if parse_flat_keyed(text).get("frozen") == 1 else "THAWED"


def read_stats(layout: CgroupLayout, path: str) -> dict[str, Any]:
    """Docker-shaped stats sections for cgroup ``path``; sections whose files are gone are left out."""
    reader = _read_stats_v1 if layout.version == 1 else _read_stats_v2
    stats = reader(layout, path)
    stats["cgroup_version"] = layout.version
    return stats


def _read_stats_v1(layout: CgroupLayout, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    acct = layout.dir("cpuacct", path)
    if acct is not None and (total := _read_int(acct / "cpuacct.usage")) is not None:
        # cpuacct.stat counts USER_HZ ticks; Docker (via runc) reports nanoseconds.
        ticks = parse_flat_keyed(_read(acct / "cpuacct.stat") or "")
        tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
        percpu = [int(x) for x in (_read(acct / "cpuacct.usage_percpu") or "").split()]
        throttle = _cpu_stat(layout.dir("cpu", path))
        out["cpu_stats"] = {
            "cpu_usage": {
                "total_usage": total,
                "percpu_usage": percpu,
                "usage_in_kernelmode": ticks.get("system", 0) * tick_ns,
                "usage_in_usermode": ticks.get("user", 0) * tick_ns,
            },
            "throttling_data": {
                "periods": throttle.get("nr_periods", 0),
                "throttled_periods": throttle.get("nr_throttled", 0),
                "throttled_time": throttle.get("throttled_time", 0),
            },
        }
    mem = layout.dir("memory", path)
    if mem is not None and (usage := _read_int(mem / "memory.usage_in_bytes")) is not None:
        out["memory_stats"] = {
            "usage": usage,
            "max_usage": _read_int(mem / "memory.max_usage_in_bytes") or 0,
            "failcnt": _read_int(mem / "memory.failcnt") or 0,
            "limit": _read_int(mem / "memory.limit_in_bytes") or 0,
            "stats": parse_flat_keyed(_read(mem / "memory.stat") or ""),
        }
    blkio = layout.dir("blkio", path)
    if blkio is not None and blkio.is_dir():
        out["blkio_stats"] = {
            "io_service_bytes_recursive": _blkio_v1(blkio, "io_service_bytes_recursive"),
            "io_serviced_recursive": _blkio_v1(blkio, "io_serviced_recursive"),
        }
    pids = _pids(layout.dir("pids", path))
    if pids is not None:
        out["pids_stats"] = pids
    return out


def _cpu_stat(directory: Path | None) -> dict[str, int]:
    if directory is None:
        return {}
    return parse_flat_keyed(_read(directory / "cpu.stat") or "")


def _blkio_v1(directory: Path, name: str) -> list[dict[str, Any]]:
    # The CFQ/BFQ files are the accurate ones when the scheduler fills them; otherwise the
    # throttle layer's counters, as runc does.
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        entries = parse_blkio_v1(_read(directory / f"{prefix}{name}") or "")
        if entries:
            return entries
    return []


def _pids(directory: Path | None) -> dict[str, int] | None:
    if directory is None:
        return None
    current = _read_int(directory / "pids.current")
    if current is None:
        return None
    limit_text = _read(directory / "pids.max")
    limit = parse_limit(limit_text) if limit_text else None
    # Docker reports 0 for "no limit".
    return {"current": current, "limit": limit or 0}


def _read_stats_v2(layout: CgroupLayout, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    directory = layout.dir("memory", path)
    if directory is None or not directory.is_dir():
        return out
    cpu = parse_flat_keyed(_read(directory / "cpu.stat") or "")
    if "usage_usec" in cpu:
        out["cpu_stats"] = {
            "cpu_usage": {
                "total_usage": cpu["usage_usec"] * 1000,
                "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
                "usage_in_usermode": cpu.get("user_usec", 0) * 1000,
            },
            "throttling_data": {
                "periods": cpu.get("nr_periods", 0),
                "throttled_periods": cpu.get("nr_throttled", 0),
                "throttled_time": cpu.get("throttled_usec", 0) * 1000,
            },
        }
    usage = _read_int(directory / "memory.current")
    if usage is not None:
        limit_text = _read(directory / "memory.max")
        limit = parse_limit(limit_text) if limit_text else None
        events = parse_flat_keyed(_read(directory / "memory.events") or "")
        out["memory_stats"] = {
            "usage": usage,
            "limit": limit if limit is not None else 2**64 - 1,
            "failcnt": events.get("oom", 0),
            "stats": parse_flat_keyed(_read(directory / "memory.stat") or ""),
        }
    io_text = _read(directory / "io.stat")
    if io_text is not None:
        out["blkio_stats"] = {"io_service_bytes_recursive": parse_io_stat_v2(io_text)}
    pids = _pids(directory)
    if pids is not None:
        out["pids_stats"] = pids
    return out


def remove(layout: CgroupLayout, path: str) -> None:
    """rmdir the cgroup in every hierarchy (only works once empty; busy or absent ones are skipped)."""
    for directory in layout.all_dirs(path):
        with contextlib.suppress(OSError):
            directory.rmdir()
