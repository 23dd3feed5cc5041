"""Container benchmarks of a Docker-compatible daemon (issue 3), driven by the docker CLI and docker-py.

Measured against one DOCKER_HOST (loopback UNIX socket only), in bounded loops:
  * `docker run --rm busybox true` (median);
  * docker-py create + start + wait + remove of `busybox true` (median);
  * `docker exec c true` on a running container (median);
  * 20 concurrent `docker run -d busybox sleep` (wall time per round, containers/s);
  * `docker ps` with 50 running containers (median);
  * `docker logs` of a container that printed 100k lines (median);
  * the engine's memory with those 50 containers running: RSS and PSS (/proc/<pid>/smaps_rollup)
    of the daemon and every process it owns, container processes excluded. Those are the processes
    of the daemon's process tree in the daemon's own PID namespace (dockerd: dockerd + containerd;
    skiffd: itself) plus the containerd shims, found as the processes started with `-address` on a
    socket that one of those listens on (the shims are reparented to PID 1).

With a reference daemon, every measurement alternates between the two (A, B, A, B, ...), so both
see the same machine load: on a shared machine, load moves by a factor of two within minutes.

Every container created carries the label org.skiff.bench=<token> and is removed at the end, so a
shared daemon (the reference dockerd) is left as found; busybox:latest is loaded from
.test-image/busybox.tar when the daemon lacks it (and left there).

    bench/containers.py --host unix:///run/skiff/skiff.sock --reference unix:///run/ref-docker/docker.sock
    bench/run.py ...          # the same, with a throw-away skiffd (see bench/run.py --help)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit  # noqa: E402
from bench.benchkit import IMAGE, LABEL  # noqa: E402

MAX_ITERATIONS = 200
CONCURRENT = 20
FLEET = 50
LOG_LINES = 100_000
SECTION_BUDGET_S = 120.0


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return {}
    return {
        "n": len(ms),
        "median": round(statistics.median(ms), 2),
        "min": round(ms[0], 2),
        "max": round(ms[-1], 2),
    }


# --- memory ------------------------------------------------------------------------------------------


def proc_tree() -> dict[int, list[int]]:
    """ppid -> child pids of every process (bench/run.py uses it for the idle-RSS figure)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # ppid follows the parenthesised command name, which may itself contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _pidns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _listening_sockets(pids: set[int]) -> set[str]:
    out = subprocess.run(["ss", "-xlpH"], capture_output=True, text=True).stdout
    found: set[str] = set()
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.update(f for f in line.split() if f.startswith("/"))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def engine_pids(daemon_pid: int, container_ids: set[str] | None = None) -> set[int]:
    """The daemon's own process tree in its PID namespace, plus shims serving its sockets.

    container_ids: count only the shims of these containers (a shared daemon runs others' too).
    """
    ns = _pidns(daemon_pid)
    tree = proc_tree()
    owned: set[int] = set()
    todo = [daemon_pid]
    while todo:
        pid = todo.pop()
        if pid in owned or _pidns(pid) != ns:
            continue  # another PID namespace: a container's process, not the engine's
        owned.add(pid)
        todo.extend(tree.get(pid, []))
    sockets = _listening_sockets(owned)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in owned:
            continue
        argv = _cmdline(int(entry.name))
        flags = dict(itertools.pairwise(argv))
        if flags.get("-address") not in sockets:
            continue
        if container_ids is None or flags.get("-id") in container_ids:
            owned.add(int(entry.name))
    return owned


def _rollup(pid: int) -> tuple[str, int, int] | None:
    """(name, RSS KiB, PSS KiB) from /proc/<pid>/smaps_rollup."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    rss = re.search(r"^Rss:\s+(\d+) kB", rollup, re.M)
    pss = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    return name, int(rss.group(1)) if rss else 0, int(pss.group(1)) if pss else 0


def engine_memory(daemon_pid: int, container_ids: set[str] | None = None) -> dict[str, Any]:
    per_name: dict[str, dict[str, int]] = {}
    for pid in sorted(engine_pids(daemon_pid, container_ids)):
        info = _rollup(pid)
        if info is None:
            continue
        name, rss, pss = info
        # containerd-shim-runc-v2 reports its comm truncated to 15 characters.
        row = per_name.setdefault(name, {"processes": 0, "rss_kib": 0, "pss_kib": 0})
        row["processes"] += 1
        row["rss_kib"] += rss
        row["pss_kib"] += pss
    return {
        "rss_kib": sum(r["rss_kib"] for r in per_name.values()),
        "pss_kib": sum(r["pss_kib"] for r in per_name.values()),
        "processes": sum(r["processes"] for r in per_name.values()),
        "by_process": per_name,
    }


# --- the benchmarks ----------------------------------------------------------------------------------


class Bench:
    """One daemon: its CLI, its docker-py client and the containers made there (all labelled)."""

    def __init__(self, host: str, pid: int | None) -> None:
        self.host = host
        self.pid = pid
        self.docker = benchkit.cli(host)
        self.token = secrets.token_hex(4)
        self.label = f"{LABEL}={self.token}"
        self.api: Any = None
        self.fleet: list[str] = []
        self.log_container = ""

    def setup(self) -> None:
        import docker as docker_sdk

        if self.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            self.docker("load", "-q", "-i", str(benchkit.BUSYBOX_TAR))
        self.api = docker_sdk.APIClient(base_url=self.host, version="auto", timeout=60)

    def cleanup(self) -> None:
        listed = self.docker("ps", "-aq", "--no-trunc", "--filter", f"label={self.label}", check=False)
        ids = listed.stdout.decode().split()
        for i in range(0, len(ids), 25):
            self.docker("rm", "-f", *ids[i : i + 25], check=False, timeout=300)

    def close(self) -> None:
        try:
            self.cleanup()
        finally:
            if self.api is not None:
                self.api.close()

    # one operation each; the caller times them

    def run_rm(self) -> None:
        self.docker("run", "--rm", "--label", self.label, IMAGE, "true")

    def dockerpy_cycle(self) -> None:
        c = self.api.create_container(IMAGE, ["true"], labels={LABEL: self.token})
        self.api.start(c["Id"])
        status = self.api.wait(c["Id"])
        self.api.remove_container(c["Id"])
        if status["StatusCode"] != 0:
            raise RuntimeError(f"docker-py cycle: exit {status}")

    def run_detached(self, n: int, workers: int) -> tuple[float, list[str]]:
        def one(_: int) -> str:
            res = self.docker("run", "-d", "--label", self.label, IMAGE, "sleep", "3600")
            return res.stdout.decode().strip()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ids = list(pool.map(one, range(n)))
        return time.perf_counter() - t0, ids

    def concurrency_round(self) -> float:
        wall, ids = self.run_detached(CONCURRENT, CONCURRENT)
        self.docker("rm", "-f", *ids, timeout=300)
        return wall

    def start_fleet(self) -> int:
        _, self.fleet = self.run_detached(FLEET, 10)
        listed = self.docker("ps", "-q").stdout.decode().split()
        if len(listed) < FLEET:
            raise RuntimeError(f"docker ps listed {len(listed)} containers, expected >= {FLEET}")
        return len(listed)

    def ps(self) -> None:
        self.docker("ps")

    def exec(self) -> None:
        self.docker("exec", self.fleet[0], "true")

    def memory(self) -> dict[str, Any]:
        if self.pid is None:
            raise RuntimeError("daemon PID unknown (pass --pid)")
        return engine_memory(self.pid, set(self.fleet))

    def prepare_logs(self) -> None:
        res = self.docker("run", "-d", "--label", self.label, IMAGE, "seq", "1", str(LOG_LINES))
        self.log_container = res.stdout.decode().strip()
        self.docker("wait", self.log_container)
        printed = self.docker("logs", self.log_container).stdout.count(b"\n")
        if printed != LOG_LINES:
            raise RuntimeError(f"docker logs printed {printed} lines, not {LOG_LINES}")

    def logs(self) -> None:
        self.docker("logs", self.log_container)


def run_all(benches: list[Bench], iterations: int = 11, idle_seconds: float = 2.0) -> list[dict[str, Any]]:
    """Every container benchmark against each daemon, iterations interleaved (A, B, A, B, ...)
    so that both see the same machine load. Errors are reported per section, not raised."""
    iterations = max(1, min(iterations, MAX_ITERATIONS))
    outs: list[dict[str, Any]] = [{"errors": []} for _ in benches]

    @contextlib.contextmanager
    def section(name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # a benchmark reports, it does not stop half-way
            for out in outs:
                out["errors"].append(f"{name}: {exc}")

    def interleaved(key: str, op: Callable[[Bench], object], n: int) -> None:
        for bench in benches:
            op(bench)  # warm-up (first docker-py call negotiates the version, page cache, ...)
        samples: list[list[float]] = [[] for _ in benches]
        deadline = time.monotonic() + SECTION_BUDGET_S * len(benches)
        for _ in range(n):
            for i, bench in enumerate(benches):
                t0 = time.perf_counter()
                op(bench)
                samples[i].append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
        for out, taken in zip(outs, samples, strict=True):
            out[key] = stats_ms(taken)

    try:
        for bench in benches:
            bench.setup()
        with section("run_rm"):
            interleaved("run_rm_ms", Bench.run_rm, iterations)
        with section("dockerpy"):
            interleaved("dockerpy_cycle_ms", Bench.dockerpy_cycle, iterations)
        with section("concurrency"):
            walls: list[list[float]] = [[] for _ in benches]
            for _ in range(3):
                for i, bench in enumerate(benches):
                    walls[i].append(bench.concurrency_round())
            for out, taken in zip(outs, walls, strict=True):
                stats = stats_ms(taken)
                stats["containers_per_s"] = round(CONCURRENT / (stats["median"] / 1000), 2)
                out["concurrent_run_d_ms"] = stats
        for bench in benches:
            bench.cleanup()
        with section("fleet"):
            listed = [bench.start_fleet() for bench in benches]
            with section("ps"):
                interleaved("ps_50_ms", Bench.ps, iterations)
                for out, n in zip(outs, listed, strict=True):
                    out["ps_50_ms"]["listed"] = n
            with section("exec"):
                interleaved("exec_ms", Bench.exec, iterations)
            with section("memory"):
                time.sleep(idle_seconds)
                for out, bench in zip(outs, benches, strict=True):
                    out["memory_50"] = bench.memory()
        for bench in benches:
            bench.cleanup()
        with section("logs"):
            for bench in benches:
                bench.prepare_logs()
            interleaved("logs_100k_ms", Bench.logs, max(3, iterations // 3))
    except Exception as exc:
        for out in outs:
            out["errors"].append(str(exc))
    finally:
        for bench in benches:
            bench.close()
    return outs


# --- report ------------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str]] = [
    ("docker run --rm busybox true (ms)", "run_rm_ms", "median"),
    ("docker-py create+start+wait+rm (ms)", "dockerpy_cycle_ms", "median"),
    ("docker exec c true (ms)", "exec_ms", "median"),
    (f"{CONCURRENT} concurrent docker run -d (ms)", "concurrent_run_d_ms", "median"),
    (f"{CONCURRENT} concurrent: containers/s", "concurrent_run_d_ms", "containers_per_s"),
    (f"docker ps, {FLEET} running (ms)", "ps_50_ms", "median"),
    (f"docker logs, {LOG_LINES // 1000}k lines (ms)", "logs_100k_ms", "median"),
    (f"engine RSS, {FLEET} running (MiB)", "memory_50", "rss_kib"),
    (f"engine PSS, {FLEET} running (MiB)", "memory_50", "pss_kib"),
]


def value(result: dict[str, Any] | None, key: str, field: str) -> float | None:
    if not result:
        return None
    v = (result.get(key) or {}).get(field)
    if v is None:
        return None
    return round(v / 1024, 1) if field.endswith("_kib") else float(v)


def table(target: dict[str, Any], reference: dict[str, Any] | None, names: tuple[str, str]) -> str:
    rows = [("metric", names[0], names[1], "ratio")]
    for label, key, field in ROWS:
        a, b = value(target, key, field), value(reference, key, field)
        shown_a, shown_b = ("-" if v is None else f"{v:.1f}" for v in (a, b))
        rows.append((label, shown_a, shown_b, benchkit.ratio(a, b)))
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    text = []
    for i, row in enumerate(rows):
        text.append(
            "  ".join([row[0].ljust(width[0]), *(c.rjust(width[j + 1]) for j, c in enumerate(row[1:]))])
        )
        if i == 0:
            text.append("  ".join("-" * w for w in width))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    parser.add_argument("--host", default=os.environ.get("DOCKER_HOST", "unix:///run/skiff/skiff.sock"))
    parser.add_argument("--pid", type=int, help="daemon PID (default: the socket's owner, via ss)")
    parser.add_argument("--reference", help="a second daemon measured in the same run, interleaved")
    parser.add_argument("--reference-pid", type=int)
    parser.add_argument("--iterations", type=int, default=11)
    args = parser.parse_args(argv)
    benches = [Bench(args.host, args.pid or benchkit.owner_pid(args.host))]
    if args.reference:
        benches.append(Bench(args.reference, args.reference_pid or benchkit.owner_pid(args.reference)))
    results = run_all(benches, args.iterations)
    names = (args.host, args.reference or "-")
    print(table(results[0], results[1] if len(results) > 1 else None, names))
    print(json.dumps(results, indent=2))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
