"""`docker stats` (one sample and streaming) and `docker top` with ps options, by the real CLI.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). The containers run with
`--network none` unless a test is about networks: NET I/O is then 0B / 0B on both daemons.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DOCKER_CLI, CaseContainers, Daemon, Run, cli_env, ok

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SIZE = r"[0-9.]+(B|kB|KiB|MB|MiB|GB|GiB)"
# Two processes (sh and sleep), one of them spinning on a builtin.
BUSY = "sleep 600 & while true; do :; done"


@pytest.fixture
def boxes(docker: Callable[..., Run], session_token: str, busybox: str) -> Iterator[CaseContainers]:
    made = CaseContainers(docker, f"stats-{session_token}")
    yield made
    made.cleanup()


def stats_rows(text: str) -> dict[str, dict[str, str]]:
    rows = [json.loads(line) for line in ANSI.sub("", text).splitlines() if line.strip().startswith("{")]
    return {row["Name"]: row for row in rows}


def test_stats_no_stream(docker: Callable[..., Run], boxes: CaseContainers) -> None:
    busy = boxes.run("busy", "--network", "none", "-m", "64m", cmd=("sh", "-c", BUSY))
    idle = boxes.create("idle")
    time.sleep(1)
    rows = stats_rows(ok(docker("stats", "--no-stream", "--format", "{{json .}}", busy, idle)))
    row = rows[busy]
    # A busy loop: the daemon primes the CPU figures, so one sample still shows real use.
    assert float(row["CPUPerc"].rstrip("%")) > 10.0, row
    used, limit = row["MemUsage"].split(" / ")
    assert re.fullmatch(SIZE, used) and used != "0B" and limit == "64MiB", row
    assert float(row["MemPerc"].rstrip("%")) > 0.0
    assert row["NetIO"] == "0B / 0B" and re.fullmatch(f"{SIZE} / {SIZE}", row["BlockIO"])
    assert row["PIDs"] == "2"
    assert rows[idle] == {
        "BlockIO": "0B / 0B",
        "CPUPerc": "0.00%",
        "Container": idle,
        "ID": rows[idle]["ID"],
        "MemPerc": "0.00%",
        "MemUsage": "0B / 0B",
        "Name": idle,
        "NetIO": "0B / 0B",
        "PIDs": "0",
    }
    table = ok(docker("stats", "--no-stream", busy)).splitlines()
    assert table[0].split() == [
        "CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%", "NET", "I/O",
        "BLOCK", "I/O", "PIDS",
    ]  # fmt: skip
    res = docker("stats", "--no-stream", "skifftest-no-such-container")
    assert (
        res.rc == 1
        and res.stderr == "Error response from daemon: No such container: skifftest-no-such-container\n"
    )


@pytest.mark.parametrize("one_box", [True, False])
def test_stats_streaming(daemon: Daemon, boxes: CaseContainers, tmp_path: Path, one_box: bool) -> None:
    busy = boxes.run("stream", "--network", "none", cmd=("sh", "-c", BUSY))
    names = [busy] if one_box else [busy, boxes.create("stream-idle")]
    env = cli_env(daemon.host, tmp_path)
    assert DOCKER_CLI is not None
    proc = subprocess.Popen(
        [DOCKER_CLI, "stats", "--format", "{{json .}}", *names],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    seen: list[dict[str, str]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        # The CLI redraws every 500 ms; the daemon sends a sample a second. Wait for a redraw
        # that has a CPU figure from two samples.
        while time.monotonic() < deadline:
            line = ANSI.sub("", proc.stdout.readline().decode())
            if not line.strip().startswith("{"):
                continue
            row = json.loads(line)
            if row["Name"] == busy:
                seen.append(row)
                if float(row["CPUPerc"].rstrip("%")) > 10.0 and len(seen) >= 3:
                    break
    finally:
        proc.kill()
        proc.wait(10)
    assert seen and float(seen[-1]["CPUPerc"].rstrip("%")) > 10.0, seen
    assert all(r["PIDs"] == "2" and r["NetIO"] == "0B / 0B" for r in seen)


def test_top_with_ps_options(docker: Callable[..., Run], boxes: CaseContainers, daemon: Daemon) -> None:
    name = boxes.run("top", "--network", "none", cmd=("sleep", "4321"))
    pid = ok(docker("inspect", "-f", "{{.State.Pid}}", name)).strip()
    rows = ok(docker("top", name, "aux")).splitlines()
    assert rows[0].split() == [
        "USER",
        "PID",
        "%CPU",
        "%MEM",
        "VSZ",
        "RSS",
        "TTY",
        "STAT",
        "START",
        "TIME",
        "COMMAND",
    ]
    assert len(rows) == 2 and rows[1].split()[1] == pid and rows[1].endswith("sleep 4321")
    rows = ok(docker("top", name, "-o", "pid,args")).splitlines()
    assert rows[0].split() == ["PID", "COMMAND"] and rows[1].split() == [pid, "sleep", "4321"]
    res = docker("top", name, "-bogus")
    assert res.rc == 1 and res.stderr == "Error response from daemon: ps: error: unsupported SysV option\n"
    res = docker("top", name, "-o", "pid=PIDX")
    assert res.stderr == "Error response from daemon: Couldn't find PID field in ps output\n"
