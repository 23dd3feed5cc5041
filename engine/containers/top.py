"""``docker top``: run the host's ``ps`` and keep the lines of the container's processes.

As dockerd (daemon/top_unix.go): ``ps_args`` default to ``-ef``, are split on single spaces, and
``ps`` first gets ``-q<pid,pid,...>`` appended; some options cannot be combined with ``-q``, so a
failure is retried without it. The output's header gives the titles; a line is kept when its PID
column is one of the container's processes (a ``-`` PID is a thread line of the process before it,
as ``ps m`` prints). The container's processes are the members of its cgroup, read from the
``cgroup.procs`` files of the cgroup runc created (and of any cgroup nested under it).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from pathlib import Path

from engine import errdefs
from runtime.cgroups import CgroupLayout

_FORBIDDEN_PID_COLUMN = re.compile(r"\s+(\S*)=\s*(PID\S*)")
# Controllers runc joins on cgroup v1 with the cgroupfs driver, most likely to exist first.
_V1_CONTROLLERS = ("pids", "memory", "cpu", "cpuacct", "freezer", "devices", "blkio")


def validate_ps_args(ps_args: str) -> None:
    """Renaming the PID column (``-o pid=PID2``) would break the filtering; dockerd refuses it."""
    for key, value in _FORBIDDEN_PID_COLUMN.findall(ps_args):
        if key != "pid":
            raise errdefs.Internal(f'specifying "{key}={value}" is not allowed')


def _fields(line: str) -> list[str]:
    # fieldsASCII: only ASCII whitespace separates columns (a command may contain other spaces).
    return [f for f in re.split(r"[\t\n\f\r ]+", line) if f]


def parse_ps_output(output: bytes, pids: Sequence[int]) -> dict[str, object]:
    """``{"Processes": [[...]] | None, "Titles": [...]}`` for the lines whose PID is in ``pids``."""
    lines = output.decode("utf-8", "replace").split("\n")
    titles = _fields(lines[0])
    if "PID" not in titles:
        raise errdefs.Internal("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    wanted = set(pids)
    processes: list[list[str]] = []
    previous_kept = False

    def keep(fields: list[str]) -> None:
        # Overhanging fields (a command with spaces) merge into the last column.
        processes.append([*fields[: len(titles) - 1], " ".join(fields[len(titles) - 1 :])])

    for line in lines[1:]:
        if not line:
            continue
        fields = _fields(line)
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if previous_kept:
                keep(fields)
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise errdefs.Internal(
                f"Unexpected pid '{fields[pid_index]}': strconv.Atoi: parsing "
                f'"{fields[pid_index]}": invalid syntax'
            ) from None
        previous_kept = pid in wanted
        if previous_kept:
            keep(fields)
    # Go's nil slice: no matching process is `null`, not `[]`.
    return {"Processes": processes or None, "Titles": titles}


async def _run_ps(argv: list[str]) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


async def run_ps(ps_args: str, pids: Sequence[int], ps: str = "ps") -> bytes:
    """Run ``ps`` as dockerd does; a failure becomes ``ps: <first stderr line>`` (a 500)."""
    args = ps_args.split(" ")
    try:
        code, out, err = await _run_ps([ps, *args, "-q" + ",".join(str(p) for p in pids)])
        if code == 0:
            return out
        code, out, err = await _run_ps([ps, *args])
    except OSError as e:
        raise errdefs.Internal(f"ps: {e.strerror}") from None
    if code == 0:
        return out
    first = err.split(b"\n", 1)[0].decode("utf-8", "replace")
    raise errdefs.Internal(f"ps: {first or f'exit status {code}'}")


def cgroup_pids(layout: CgroupLayout, cgroup_path: str) -> list[int]:
    """Every process in ``cgroup_path`` and the cgroups below it (cgroup.procs, sorted)."""
    directory: Path | None = None
    if layout.version == 2:
        directory = layout.dir("pids", cgroup_path)
    else:
        for controller in _V1_CONTROLLERS:
            candidate = layout.dir(controller, cgroup_path)
            if candidate is not None and candidate.is_dir():
                directory = candidate
                break
    if directory is None:
        return []
    pids: set[int] = set()
    for root, _, files in os.walk(directory):
        if "cgroup.procs" not in files:
            continue
        try:
            text = Path(root, "cgroup.procs").read_text()
        except OSError:
            continue
        pids.update(int(p) for p in text.split() if p.isdigit())
    return sorted(pids)
