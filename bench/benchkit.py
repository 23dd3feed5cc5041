"""What the benchmarks in bench/ share: the docker CLI against a loopback daemon, a throw-away skiffd,
the result files.

Imported as ``bench.benchkit``: a bench run as a script first puts the repository root in place of
bench/ at the head of sys.path, where bench/network.py would shadow the `network` package that
tools/testdaemon.py imports.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BUSYBOX_TAR = ROOT / ".test-image" / "busybox.tar"
IMAGE = "busybox:latest"
LABEL = "org.skiff.bench"
DOCKER_CLI = (
    "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")
)

Docker = Callable[..., subprocess.CompletedProcess[bytes]]


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    # A bench's docstring is its help, laid out by hand.
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """--host and --reference of a bench that measures a throw-away skiffd unless given a daemon."""
    parser.add_argument("--host", help="daemon to measure (default: a throw-away skiffd)")
    parser.add_argument(
        "--reference", help="second daemon measured in the same run, e.g. the reference dockerd"
    )


def load_tool(name: str) -> ModuleType:
    """tools/<name>.py, which is no package."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- the daemons --------------------------------------------------------------------------------------


def socket_path(host: str) -> str:
    """The socket of a unix:// host; nothing else is measured, so no traffic leaves loopback."""
    if not host.startswith("unix://"):
        raise SystemExit(f"only unix:// hosts are benchmarked (loopback only), got {host}")
    return host.removeprefix("unix://")


def owner_pid(host: str) -> int | None:
    """The process listening on a unix:// host's socket, from `ss -xlp`."""
    path = socket_path(host)
    out = subprocess.run(["ss", "-xlpH"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if path in line.split():
            match = re.search(r"pid=(\d+)", line)
            if match:
                return int(match.group(1))
    return None


@contextlib.contextmanager
def daemon(host: str | None, log_level: str = "warn") -> Iterator[tuple[str, int | None]]:
    """(host, None) for a given host, else a throw-away skiffd's (host, PID) while it runs."""
    if host:
        yield host, None
        return
    with load_tool("testdaemon").SkiffDaemon(log_level=log_level) as skiffd:
        yield skiffd.host, skiffd.pid


# --- the docker CLI -----------------------------------------------------------------------------------


def docker_env(host: str, **extra: str) -> dict[str, str]:
    """The CLI's environment for host: the caller's own DOCKER_* and COMPOSE_* settings would pick
    another daemon, context or project, and hints would only add output."""
    socket_path(host)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env.update(DOCKER_HOST=host, DOCKER_CLI_HINTS="false", **extra)
    return env


def docker_cli() -> str:
    if DOCKER_CLI is None:
        raise SystemExit("no docker CLI")
    return DOCKER_CLI


def killed_after(timeout: int, *args: str) -> list[str]:
    """argv of the docker CLI under `timeout -s KILL`, so a hung daemon cannot stall a bench."""
    return ["timeout", "-s", "KILL", str(timeout), docker_cli(), *args]


def cli(host: str, timeout: int = 120) -> Docker:
    """A runner of the docker CLI against host that raises RuntimeError on failure unless check=False."""
    env = docker_env(host)
    docker_cli()  # without one, stop here rather than in the middle of a measurement

    def run(*args: str, timeout: int = timeout, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        res = subprocess.run(
            killed_after(timeout, *args), capture_output=True, env=env, stdin=subprocess.DEVNULL
        )
        if check and res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"docker {' '.join(args[:3])}: rc={res.returncode}: {err}")
        return res

    return run


def docker(
    host: str, *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[bytes]:
    """One docker CLI call, no wrapper process timed with it; raises subprocess.TimeoutExpired."""
    return subprocess.run(
        [docker_cli(), *args],
        env=env or docker_env(host),
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def check(res: subprocess.CompletedProcess[bytes]) -> str:
    """stdout of a `docker` call that succeeded; RuntimeError otherwise."""
    if res.returncode != 0:
        raise RuntimeError(
            f"{res.args[1:]}: rc={res.returncode}: {res.stderr.decode(errors='replace').strip()}"
        )
    return res.stdout.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the results --------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def print_errors(errors: Iterable[tuple[str, list[str]]]) -> None:
    """Each daemon's errors on stderr, after the table, under the daemon's name."""
    for name, messages in errors:
        for message in messages:
            print(f"error ({name}): {message}", file=sys.stderr)


def result_head(bench: str | None = None, *, python: bool = True, load: str | None = None) -> dict[str, Any]:
    """The fields a result file starts with: schema, the bench's name (where its files have it), the
    UTC time and the machine. Which machine fields are there, and under what key the load average,
    differs between the benches; each keeps what its earlier files have, to stay comparable."""
    machine: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    if python:
        machine["python"] = platform.python_version()
    if load:
        machine[load] = os.getloadavg()
    head: dict[str, Any] = {"schema": 1}
    if bench:
        head["bench"] = bench
    head["time"] = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    head["machine"] = machine
    return head


def save(results_dir: Path, prefix: str, record: dict[str, Any]) -> None:
    """Writes record to <results_dir>/<prefix><its time>.json and says where."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{prefix}{record['time']}.json"
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results: {out}")
