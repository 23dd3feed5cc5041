"""Where a container's cgroup is and what the daemon reads there: OOM kills, freezer state.

runc creates and removes the cgroups; this module only picks the path the spec should use
(cgroupfs driver, like dockerd's "/docker/<id>") and reads files. It supports cgroup v1
(including the hybrid layout, v1 controllers under /sys/fs/cgroup/<ctrl> and an empty v2 at
/sys/fs/cgroup/unified) and pure v2. The layout comes from /proc/self/mountinfo, since
distributions mount v1 controllers jointly ("cpu,cpuacct") or separately.

Resource-usage stats for `docker stats` are runtime/cgroupstats.py's, which builds on the layout,
parsers and file readers here. All functions are synchronous, small sysfs reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


# --- readers -----------------------------------------------------------------------------------


def read_text(path: Path) -> str | None:
    """A cgroup or proc file's text; None once it is gone (the cgroup or process went away)."""
    try:
        return path.read_text()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
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
    text = read_text(directory / name)
    if text is None:
        return None
    return parse_flat_keyed(text).get("oom_kill")


def freezer_state(layout: CgroupLayout, path: str) -> str | None:
    """Freezer state: "FROZEN", "FREEZING" or "THAWED" (v2's cgroup.events "frozen" is mapped)."""
    directory = layout.dir("freezer", path)
    if directory is None:
        return None
    if "freezer" in layout.v1:
        text = read_text(directory / "freezer.state")
        return None if text is None else text.strip()
    text = read_text(directory / "cgroup.events")
    if text is None:
        return None
    return "FROZEN" if parse_flat_keyed(text).get("frozen") == 1 else "THAWED"


def remove(layout: CgroupLayout, path: str) -> None:
    """rmdir the cgroup in every hierarchy (only works once empty; busy or absent ones are skipped)."""
    for directory in layout.all_dirs(path):
        with contextlib.suppress(OSError):
            directory.rmdir()
