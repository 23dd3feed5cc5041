#!/usr/bin/env python3
"""Compose benchmark (issue 6): `docker compose up -d` then `down -v` of two smoke-suite scenarios,
with the real compose v2 plugin, medians over N runs.

  * web (compat-tests/compose/web): httpd with a published loopback port and a network alias, plus a
    client; a project network, two containers.
  * healthy (compat-tests/compose/healthy): two services sharing a named volume, the second started
    only once the first's healthcheck says healthy (`depends_on: condition: service_healthy`). Run
    with WRITER_DELAY=0 and HEALTH_INTERVAL=100ms, so the time is the engine's, not the scenario's
    sleeps; compose itself still polls the health status every 500 ms, which puts a floor of about
    half a second under `up` on any daemon.

Measured against a throw-away skiffd (tools/testdaemon.py) or the daemon at --host, and with
--reference against a second daemon (the reference dockerd) in the same run. Runs alternate between
the two (A, B, A, B, ...) so both see the same machine load. Only loopback UNIX sockets are used.

Every project gets a unique name (skiff-bench-<token>-...), the image is busybox:latest under a tag
of the run's own, and the tag is removed at the end; every run ends with `down -v --remove-orphans`
and a check that nothing with the project label is left, so a shared daemon is left as found
(busybox:latest is loaded from .test-image/busybox.tar if missing). The results are printed as a
table and written to bench/results/compose-<UTC stamp>.json.

With --spare-network each daemon keeps one more (empty) bridge network of the run's own meanwhile, as
a daemon in use would have: then no `down -v` removes the daemon's last network.

    bench/compose.py                                   # throw-away skiffd
    bench/compose.py --reference unix:///run/ref-docker/docker.sock --runs 5
    bench/compose.py --host unix:///run/skiff/skiff.sock
"""

from __future__ import annotations

import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit  # noqa: E402
from bench.benchkit import check, docker  # noqa: E402

SCENARIOS = ROOT / "compat-tests" / "compose"
PROJECT_LABEL = "com.docker.compose.project"
# Per scenario: environment for the compose file's interpolation (WEB_PORT is added per run).
SCENARIO_ENV: dict[str, dict[str, str]] = {
    "web": {},
    "healthy": {"WRITER_DELAY": "0", "HEALTH_INTERVAL": "100ms"},
}


@dataclass
class Target:
    host: str
    server: str = ""
    image: str = ""
    up_s: dict[str, list[float]] = field(default_factory=dict)
    down_s: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def medians(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for scenario in SCENARIO_ENV:
            up, down = self.up_s.get(scenario, []), self.down_s.get(scenario, [])
            total = [a + b for a, b in zip(up, down, strict=False)]
            out[scenario] = {
                "up_median_s": _median(up),
                "down_median_s": _median(down),
                "total_median_s": _median(total),
            }
        return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def prepare(target: Target, token: str) -> None:
    target.server = check(docker(target.host, "version", "--format", "{{.Server.Version}}")).strip()
    if docker(target.host, "image", "inspect", benchkit.IMAGE).returncode != 0:
        check(docker(target.host, "load", "-i", str(benchkit.BUSYBOX_TAR)))
    target.image = f"skiff-bench-compose-{token}:latest"
    check(docker(target.host, "tag", benchkit.IMAGE, target.image))


def leftovers(target: Target, project: str) -> list[str]:
    label = f"label={PROJECT_LABEL}={project}"
    found: list[str] = []
    for args in (("ps", "-aq"), ("network", "ls", "-q"), ("volume", "ls", "-q")):
        found += check(docker(target.host, *args, "--filter", label)).split()
    return found


def one_run(target: Target, scenario: str, project: str) -> None:
    env = benchkit.docker_env(target.host, SKIFF_TEST_IMAGE=target.image, **SCENARIO_ENV[scenario])
    if scenario == "web":
        env["WEB_PORT"] = str(benchkit.free_port())
    base = [
        "compose",
        "--ansi",
        "never",
        "--progress",
        "quiet",
        "-p",
        project,
        "-f",
        str(SCENARIOS / scenario / "compose.yaml"),
    ]
    try:
        start = time.perf_counter()
        check(docker(target.host, *base, "up", "-d", env=env))
        up = time.perf_counter() - start
        start = time.perf_counter()
        check(docker(target.host, *base, "down", "-v", env=env))
        down = time.perf_counter() - start
        target.up_s.setdefault(scenario, []).append(up)
        target.down_s.setdefault(scenario, []).append(down)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        target.errors.append(f"{project}: {exc}")
    finally:
        docker(target.host, *base, "down", "-v", "--remove-orphans", "-t", "1", env=env)
        left = leftovers(target, project)
        if left:
            target.errors.append(f"{project}: left behind {left}")


def table(target: Target, reference: Target | None) -> str:
    t, r = target.medians(), reference.medians() if reference else {}
    ref_name = reference.server if reference else "-"
    lines = [f"{'compose (median s)':<28} {target.server or 'skiff':>12} {ref_name:>14} {'skiff/ref':>10}"]
    for scenario in SCENARIO_ENV:
        for key, label in (
            ("up_median_s", "up -d"),
            ("down_median_s", "down -v"),
            ("total_median_s", "up -d + down -v"),
        ):
            a = t[scenario][key]
            b = r[scenario][key] if r else None
            shown = [v if v is not None else "-" for v in (a, b)]
            row = f"{f'{scenario}: {label}':<28} {shown[0]:>12} {shown[1]:>14}"
            lines.append(f"{row} {benchkit.ratio(a, b):>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    benchkit.add_daemon_options(parser)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--spare-network",
        action="store_true",
        help="keep one more bridge network of the run's own on each daemon meanwhile (a daemon in use)",
    )
    parser.add_argument("--results-dir", type=Path, default=benchkit.RESULTS)
    args = parser.parse_args(argv)
    token = secrets.token_hex(4)

    with benchkit.daemon(args.host, log_level="info") as (host, _):
        targets = [Target(host)] + ([Target(args.reference)] if args.reference else [])
        try:
            for target in targets:
                prepare(target, token)
                if args.spare_network:
                    check(docker(target.host, "network", "create", f"skiff-bench-{token}-spare"))
            # One unmeasured round first: image and page caches, compose's own first start.
            for index in range(-1, args.runs):
                for scenario in SCENARIO_ENV:
                    for target in targets:
                        project = f"skiff-bench-{token}-{scenario}-{index + 1}"
                        errors = len(target.errors)
                        one_run(target, scenario, project)
                        if index < 0 and len(target.errors) == errors:
                            target.up_s[scenario].pop()
                            target.down_s[scenario].pop()
        finally:
            for target in targets:
                if target.image:
                    docker(target.host, "rmi", target.image)
                if args.spare_network:
                    docker(target.host, "network", "rm", f"skiff-bench-{token}-spare")

    target, reference = targets[0], targets[1] if len(targets) > 1 else None
    print(table(target, reference))
    benchkit.print_errors((t.server or t.host, t.errors) for t in targets)
    record = {
        **benchkit.result_head(load="loadavg"),
        "params": {
            "runs": args.runs,
            "host": args.host or "throw-away skiffd",
            "scenarios": SCENARIO_ENV,
            "spare_network": args.spare_network,
        },
        "target": {**asdict(target), "medians": target.medians()},
        "reference": {**asdict(reference), "medians": reference.medians()} if reference else None,
    }
    benchkit.save(args.results_dir, "compose-", record)
    return 1 if any(t.errors for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
