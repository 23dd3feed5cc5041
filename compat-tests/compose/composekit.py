"""Drive `docker compose` (the real v2 plugin) on one project of a scenario directory.

A `Project` copies `<scenario>/compose.yaml` into a directory of its own (tests may edit the copy),
runs `docker compose -p <unique name> -f <copy> ...` against the daemon under test and, in `cleanup`,
always runs `down -v --remove-orphans`, then removes whatever still carries the project's label.
Loaded by this directory's conftest (the test directories are not packages) and by bench/compose.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
PROJECT_LABEL = "com.docker.compose.project"
DOCKER_CLI = (
    "/usr/local/bin/docker"
    if os.access("/usr/local/bin/docker", os.X_OK)
    else shutil.which("docker") or "docker"
)
TIMEOUT = 90


class Run(NamedTuple):
    rc: int
    stdout: str
    stderr: str


def ok(res: Run) -> str:
    assert res.rc == 0, f"rc={res.rc}\nstdout={res.stdout}\nstderr={res.stderr}"
    return res.stdout


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scenario_dir(scenario: str) -> Path:
    path = HERE / scenario
    assert (path / "compose.yaml").is_file(), f"no scenario {scenario!r} in {HERE}"
    return path


class Project:
    """One compose project; `self(*args)` runs `docker compose <global flags> *args`."""

    def __init__(self, name: str, scenario: str, workdir: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.scenario = scenario
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(scenario_dir(scenario), self.dir, dirs_exist_ok=True)
        self.file = self.dir / "compose.yaml"
        self.env = dict(env)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def filter(self) -> str:
        return f"label={PROJECT_LABEL}={self.name}"

    def argv(self, *args: str) -> list[str]:
        return [
            DOCKER_CLI,
            "compose",
            "--ansi",
            "never",
            "--progress",
            "plain",
            "-p",
            self.name,
            "-f",
            str(self.file),
            *args,
        ]

    def __call__(self, *args: str, timeout: int = TIMEOUT, input: bytes | None = None) -> Run:
        argv = ["timeout", "-s", "KILL", str(timeout), *self.argv(*args)]
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self.env,
            cwd=self.dir,
        )
        return Run(
            proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )

    def docker(self, *args: str, timeout: int = TIMEOUT) -> Run:
        """The plain docker CLI with the same environment (same daemon)."""
        argv = ["timeout", "-s", "KILL", str(timeout), DOCKER_CLI, *args]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=self.env, cwd=self.dir)
        return Run(
            proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """A background compose command, stdout and stderr merged; cleanup kills it if still running."""
        proc = subprocess.Popen(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.dir,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(ok(self.docker("inspect", ref)))
        assert len(data) == 1
        return data[0]

    def container_ids(self, *filters: str) -> list[str]:
        """IDs of the project's containers (running or not), narrowed by extra `label=...` filters."""
        args = ["ps", "-aq", "--no-trunc", "--filter", self.filter]
        for f in filters:
            args += ["--filter", f]
        return ok(self.docker(*args)).split()

    def leftovers(self) -> dict[str, list[str]]:
        """Everything that still carries the project's label: containers, networks, volumes."""
        return {
            "containers": ok(self.docker("ps", "-aq", "--no-trunc", "--filter", self.filter)).split(),
            "networks": ok(self.docker("network", "ls", "-q", "--no-trunc", "--filter", self.filter)).split(),
            "volumes": ok(self.docker("volume", "ls", "-q", "--filter", self.filter)).split(),
        }

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        self("down", "-v", "--remove-orphans", "-t", "1")
        # A broken `down` must not leave objects on a shared daemon: remove by label, then report.
        left = self.leftovers()
        for cid in left["containers"]:
            self.docker("rm", "-fv", cid)
        for net in left["networks"]:
            self.docker("network", "rm", net)
        for vol in left["volumes"]:
            self.docker("volume", "rm", "-f", vol)


# Bytes of an unfinished line, per process, kept for its next read_until.
_pending: dict[int, bytes] = {}


def read_until(
    proc: subprocess.Popen[bytes], done: Callable[[list[str]], bool], timeout: float = 30.0
) -> list[str]:
    """Lines of `proc`'s stdout until `done(lines)` holds, EOF, or the timeout (then what was read).

    A line still incomplete when it returns is kept for the next call on the same process."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    lines: list[str] = []
    buf = _pending.pop(proc.pid, b"")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(lines):
            chunk = proc.stdout.read()
            if chunk is None:
                time.sleep(0.05)
                continue
            if chunk == b"":
                if buf:
                    lines.append(buf.decode(errors="replace"))
                    buf = b""
                break
            buf += chunk
            *complete, buf = buf.split(b"\n")
            lines += [line.decode(errors="replace").rstrip("\r") for line in complete]
    finally:
        os.set_blocking(proc.stdout.fileno(), True)
        if buf:
            _pending[proc.pid] = buf
    return lines
