#!/usr/bin/env python3
"""Micro-benchmarks of a Docker-compatible daemon, optionally side by side with a reference dockerd.

Measures, over loopback UNIX sockets only and in bounded loops:
  * /_ping latency on one keep-alive connection (median, p90, p99, requests/s);
  * `docker load -i` of a busybox image with a layer of its own, followed by `docker rmi` (median);
  * the daemon's resident memory at idle: its process plus descendants (dockerd: + containerd);
  * the container benchmarks of bench/containers.py (run --rm, docker-py cycle, exec, 20 concurrent
    run -d, ps and memory with 50 running containers, logs of 100k lines), target and reference
    interleaved while the throw-away skiffd runs; --no-containers skips them.

    bench/run.py --host unix:///run/skiff/skiff.sock [--reference unix:///run/ref-docker/docker.sock]
    bench/run.py --start-skiffd --reference unix:///run/ref-docker/docker.sock   # (what `make bench` runs)

Results: a table on stdout and JSON in bench/results/<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit, containers  # noqa: E402

MAX_PING = 100_000
MAX_LOADS = 50
SECTION_BUDGET_S = 120.0


@dataclass
class Result:
    host: str
    server: str = ""
    api_version: str = ""
    pid: int | None = None
    ping_ms: dict[str, float] = field(default_factory=dict)
    load_ms: dict[str, float] = field(default_factory=dict)
    rmi_ms: dict[str, float] = field(default_factory=dict)
    rss_kib: dict[str, int] = field(default_factory=dict)
    containers: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    if not ms:
        return {}

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p * (len(ms) - 1)))]

    return {
        "n": len(ms),
        "median": round(statistics.median(ms), 4),
        "p90": round(pct(0.90), 4),
        "p99": round(pct(0.99), 4),
        "mean": round(statistics.fmean(ms), 4),
        "min": round(ms[0], 4),
    }


def bench_ping(host: str, iterations: int, warmup: int = 100) -> tuple[dict[str, float], str, str]:
    transport = httpx.HTTPTransport(uds=benchkit.socket_path(host))
    samples: list[float] = []
    with httpx.Client(transport=transport, base_url="http://docker", timeout=10) as client:
        first = client.get("/_ping")
        first.raise_for_status()
        for _ in range(warmup):
            client.get("/_ping")
        deadline = time.monotonic() + SECTION_BUDGET_S
        start = time.perf_counter()
        for _ in range(iterations):
            t0 = time.perf_counter()
            res = client.get("/_ping")
            samples.append(time.perf_counter() - t0)
            if res.status_code != 200:
                raise RuntimeError(f"/_ping answered {res.status_code}")
            if time.monotonic() > deadline:
                break
        elapsed = time.perf_counter() - start
    stats = summary(samples)
    stats["requests_per_s"] = round(len(samples) / elapsed, 1)
    return stats, first.headers.get("Server", ""), first.headers.get("Api-Version", "")


def bench_load(
    host: str, image: Path, ref: str, iterations: int
) -> tuple[dict[str, float], dict[str, float]]:
    docker = benchkit.cli(host)
    loads: list[float] = []
    rmis: list[float] = []
    deadline = time.monotonic() + SECTION_BUDGET_S
    for _ in range(iterations):
        t0 = time.perf_counter()
        res = docker("load", "-q", "-i", str(image), check=False)
        loads.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"docker load failed: {res.stderr.decode(errors='replace')}")
        t0 = time.perf_counter()
        res = docker("rmi", ref, check=False)
        rmis.append(time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"docker rmi failed: {res.stderr.decode(errors='replace')}")
        if time.monotonic() > deadline:
            break
    return summary(loads), summary(rmis)


def _rss_kib(pid: int) -> tuple[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    name = re.search(r"^Name:\s*(\S+)", status, re.M)
    rss = re.search(r"^VmRSS:\s*(\d+) kB", status, re.M)
    return (name.group(1) if name else str(pid), int(rss.group(1)) if rss else 0)


def daemon_rss(pid: int) -> dict[str, int]:
    """RSS of the daemon and its descendants (dockerd's containerd is its child), per process name."""
    tree = containers.proc_tree()
    todo, seen = [pid], set()
    per_name: dict[str, int] = {}
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        info = _rss_kib(p)
        if info:
            per_name[info[0]] = per_name.get(info[0], 0) + info[1]
        todo.extend(tree.get(p, []))
    per_name["total"] = sum(v for k, v in per_name.items())
    return per_name


def run_one(host: str, pid: int | None, args: argparse.Namespace, image: Path, ref: str) -> Result:
    result = Result(host=host)
    try:
        result.ping_ms, result.server, result.api_version = bench_ping(host, args.ping_iterations)
    except Exception as exc:  # a benchmark reports, it does not crash half-way
        result.errors.append(f"ping: {exc}")
    if benchkit.DOCKER_CLI is None:
        result.errors.append("load: no docker CLI")
    else:
        try:
            result.load_ms, result.rmi_ms = bench_load(host, image, ref, args.load_iterations)
        except Exception as exc:
            result.errors.append(f"load: {exc}")
            benchkit.cli(host)("rmi", "-f", ref, check=False)
    result.pid = pid or benchkit.owner_pid(host)
    if result.pid:
        time.sleep(args.idle_seconds)
        result.rss_kib = daemon_rss(result.pid)
    else:
        result.errors.append("rss: daemon PID not found (pass --pid)")
    return result


def run_containers(
    args: argparse.Namespace, target: Result, reference_pid: int | None
) -> list[dict[str, Any]]:
    """The container benchmarks, the reference's interleaved with the target's (bench/containers.py)."""
    benches = [containers.Bench(target.host, target.pid)]
    if args.reference:
        benches.append(containers.Bench(args.reference, reference_pid))
    return containers.run_all(benches, args.container_iterations, args.idle_seconds)


def print_table(target: Result, reference: Result | None) -> None:
    rows: list[tuple[str, Any, Any]] = [
        ("/_ping median (ms)", target.ping_ms.get("median"), reference and reference.ping_ms.get("median")),
        ("/_ping p99 (ms)", target.ping_ms.get("p99"), reference and reference.ping_ms.get("p99")),
        (
            "/_ping requests/s",
            target.ping_ms.get("requests_per_s"),
            reference and reference.ping_ms.get("requests_per_s"),
        ),
        (
            "docker load median (ms)",
            target.load_ms.get("median"),
            reference and reference.load_ms.get("median"),
        ),
        ("docker rmi median (ms)", target.rmi_ms.get("median"), reference and reference.rmi_ms.get("median")),
        (
            "idle RSS total (MiB)",
            _mib(target.rss_kib.get("total")),
            reference and _mib(reference.rss_kib.get("total")),
        ),
    ]
    head = (
        "metric",
        target.server or target.host,
        (reference.server or reference.host) if reference else "-",
    )
    table = [(m, _fmt(a), _fmt(b) if reference else "-", benchkit.ratio(a, b)) for m, a, b in rows]
    lines = [(*head, "skiff/ref"), *table]
    width = [max(len(row[i]) for row in lines) for i in range(4)]
    for i, row in enumerate(lines):
        cells = [f"{row[0]:<{width[0]}}", *(f"{cell:>{width[j]}}" for j, cell in enumerate(row) if j)]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in width))
    for res in (target, reference):
        if res and res.errors:
            print(f"errors on {res.host}: {'; '.join(res.errors)}", file=sys.stderr)


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) and value < 10 else f"{value:.1f}"


def _mib(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib else None


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    parser.add_argument("--host", default=os.environ.get("DOCKER_HOST", "unix:///run/skiff/skiff.sock"))
    parser.add_argument("--pid", type=int, help="daemon PID for RSS (default: owner of the socket, via ss)")
    parser.add_argument(
        "--reference", help="a second daemon measured in the same run, e.g. the reference dockerd"
    )
    parser.add_argument("--reference-pid", type=int)
    parser.add_argument("--start-skiffd", action="store_true", help="run a throw-away skiffd and measure it")
    parser.add_argument("--ping-iterations", type=int, default=3000)
    parser.add_argument("--load-iterations", type=int, default=7)
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument(
        "--no-containers", dest="containers", action="store_false", help="skip the container benchmarks"
    )
    parser.add_argument("--container-iterations", type=int, default=11)
    parser.add_argument("--results-dir", type=Path, default=benchkit.RESULTS)
    args = parser.parse_args(argv)
    args.ping_iterations = max(1, min(args.ping_iterations, MAX_PING))
    args.load_iterations = max(1, min(args.load_iterations, MAX_LOADS))

    mkimage = benchkit.load_tool("mkimage")
    token = secrets.token_hex(4)
    ref = f"skiff-bench-{token}:latest"
    with tempfile.TemporaryDirectory(prefix="skiff-bench-") as tmp:
        image = Path(tmp) / "bench.tar"
        # A layer of its own, so no other image on the daemon shares it and every load unpacks it.
        spec = mkimage.ImageSpec(tags=(ref,), extra_files=(("etc/skiff-bench", token.encode()),))
        mkimage.write_archive(spec, image)

        reference_pid = args.reference_pid
        if args.reference and reference_pid is None:
            reference_pid = benchkit.owner_pid(args.reference)
        paired: list[dict[str, Any]] = []
        with benchkit.daemon(None if args.start_skiffd else args.host) as (host, skiffd_pid):
            target = run_one(host, skiffd_pid or args.pid, args, image, ref)
            if args.containers and benchkit.DOCKER_CLI is not None:
                paired = run_containers(args, target, reference_pid)
        reference = run_one(args.reference, reference_pid, args, image, ref) if args.reference else None
        for res, measured in zip((target, reference), paired, strict=False):
            if res is not None:
                res.containers = measured
                res.errors.extend(f"containers: {e}" for e in measured.get("errors", []))

    print_table(target, reference)
    if args.containers:
        names = (target.server or target.host, (reference.server or reference.host) if reference else "-")
        print()
        print(containers.table(target.containers, reference.containers if reference else None, names))
    record = {
        **benchkit.result_head(),
        "params": {k: v for k, v in vars(args).items() if k != "results_dir"},
        "target": asdict(target),
        "reference": asdict(reference) if reference else None,
    }
    benchkit.save(args.results_dir, "", record)
    return 1 if target.errors else 0


if __name__ == "__main__":
    sys.exit(main())
