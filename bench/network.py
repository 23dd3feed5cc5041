#!/usr/bin/env python3
"""Networking benchmark (issue 4): network create, published-port readiness, wget by name and the
start latency a bridge endpoint adds, for skiff and, in the same run, the reference dockerd.

Per run, for each daemon in turn (A, B, A, B, so both see the same machine load), medians over N:
  * `docker network create` (the `docker network rm` after it is not timed);
  * `docker run -d -p 127.0.0.1:<free port>:80 busybox httpd -f -p 80`, timed from the CLI's start
    until an HTTP GET from the host to 127.0.0.1:<port> gets an HTTP answer (a connect every 5 ms
    with a 50 ms connect timeout; dockerd's userland proxy accepts before the container listens,
    so only an HTTP status line counts). Probing starts when `docker run -d` returns: dockerd's
    proxy listens before the container's network is ready, and a connection that early delays
    dockerd 20.10's first answer to about 1.1 s instead of 0.5 s here; --probe-early probes from
    the CLI's start instead;
  * `docker run --rm --network <net> busybox wget -qO- http://web/` end to end, on a user network
    where a busybox httpd container answers to the name ``web`` (a network alias: its container
    name carries the run's token, so a shared daemon never sees a clash);
  * `docker run --rm busybox true` on the default bridge and with `--network none`: the difference
    of the two medians is what a bridge endpoint adds to a container start (also shown: the median
    of each run's difference, the two being run back to back, which a loaded machine moves less).
After the runs the daemons' memory is recorded (RSS and PSS of the engine's own processes, as in
bench/containers.py: skiffd and its helpers; dockerd + containerd + shims).

Only loopback and the containers' own addresses are reached. Everything made carries the label
org.skiff.bench=<token> and is removed at the end, also on failure, so a shared daemon is left as
found (busybox:latest is loaded from .test-image/busybox.tar if missing).

    bench/network.py                      # a throw-away skiffd (tools/testdaemon.py)
    bench/network.py --reference unix:///run/ref-docker/docker.sock -n 7
    bench/network.py --host unix:///run/skiff/skiff.sock

Results: a table on stdout and JSON in bench/results/network-<UTC stamp>.json.
"""

from __future__ import annotations

import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path, and this file would shadow the `network` package that
# tools/testdaemon.py imports: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit, containers  # noqa: E402
from bench.benchkit import IMAGE  # noqa: E402

POLL_S = 0.005
CONNECT_TIMEOUT_S = 0.05
READ_TIMEOUT_S = 0.2
READY_TIMEOUT_S = 30.0
WEB_ALIAS = "web"
WEB_BODY = "skiff-bench-web"
# Aims of issue 4: each figure at most half of dockerd's.
AIM = 0.5

# (key, table label); the samples of each are in Target.samples[key], in seconds.
METRICS = (
    ("network_create", "`docker network create`"),
    ("port_ready", "published port answers after `run -d`"),
    ("run_detached", "  of which `docker run -d` returns"),
    ("wget_by_name", "`run --rm` wget http://web/ by name"),
    ("run_bridge", "`run --rm busybox true`, bridge"),
    ("run_none", "`run --rm busybox true`, --network none"),
)


def http_answers(port: int) -> bool:
    """One GET to 127.0.0.1:<port>; True once an HTTP status line comes back."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S) as s:
            s.settimeout(READ_TIMEOUT_S)
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


@dataclass
class Target:
    name: str
    host: str
    docker: benchkit.Docker = field(repr=False)
    token: str
    pid: int | None = None
    probe_early: bool = False
    server: str = ""
    web_network: str = ""
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k, _ in METRICS})
    memory: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{benchkit.LABEL}={self.token}"

    def name_for(self, what: str) -> str:
        return f"skiff-bench-net-{self.token}-{what}-{secrets.token_hex(2)}"

    def median_ms(self, key: str) -> float | None:
        values = self.samples.get(key) or []
        return round(statistics.median(values) * 1000, 1) if values else None

    def start_overhead_ms(self) -> float | None:
        bridge, none = self.median_ms("run_bridge"), self.median_ms("run_none")
        return round(bridge - none, 1) if bridge is not None and none is not None else None

    def start_overhead_paired_ms(self) -> float | None:
        """The median of each run's bridge minus none (adjacent, so slow load swings cancel)."""
        pairs = zip(self.samples["run_bridge"], self.samples["run_none"], strict=False)
        diffs = [b - n for b, n in pairs]
        return round(statistics.median(diffs) * 1000, 1) if diffs else None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "server": self.server,
            "pid": self.pid,
            "samples_s": {k: [round(v, 5) for v in vs] for k, vs in self.samples.items()},
            "median_ms": {k: self.median_ms(k) for k, _ in METRICS},
            "bridge_start_overhead_ms": self.start_overhead_ms(),
            "bridge_start_overhead_paired_ms": self.start_overhead_paired_ms(),
            "memory": self.memory,
            "errors": self.errors,
        }

    # ---- set-up and clean-up ---------------------------------------------------------------------

    def prepare(self) -> None:
        self.server = self.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
        if self.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            self.docker("load", "-q", "-i", str(benchkit.BUSYBOX_TAR))
        self.web_network = self.name_for("web")
        self.docker("network", "create", "--label", self.label, self.web_network)
        web = self.name_for("httpd")
        self.docker(
            "run", "-d", "--name", web, "--label", self.label, "--network", self.web_network,
            "--network-alias", WEB_ALIAS, IMAGE,
            "sh", "-c", f"mkdir -p /www && echo {WEB_BODY} > /www/index.html && exec httpd -f -p 80 -h /www",
        )  # fmt: skip
        # The first wget also checks that the name resolves and the page is the one served here.
        deadline = time.monotonic() + 30
        while True:
            res = self.docker(*self.wget_argv(), check=False)
            if res.returncode == 0 and WEB_BODY in res.stdout.decode(errors="replace"):
                return
            if time.monotonic() > deadline:
                err = res.stderr.decode(errors="replace").strip()
                raise RuntimeError(f"wget http://{WEB_ALIAS}/ never answered: rc={res.returncode}: {err}")
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Every container and network of this run's label, whatever state the run stopped in."""
        listed = self.docker("ps", "-aq", "--no-trunc", "--filter", f"label={self.label}", check=False)
        ids = listed.stdout.decode().split()
        if ids:
            self.docker("rm", "-f", *ids, check=False, timeout=300)
        listed = self.docker("network", "ls", "-q", "--filter", f"label={self.label}", check=False)
        nets = listed.stdout.decode().split()
        if nets:
            self.docker("network", "rm", *nets, check=False)
        left = self.docker("ps", "-aq", "--filter", f"label={self.label}", check=False).stdout.split()
        left += self.docker(
            "network", "ls", "-q", "--filter", f"label={self.label}", check=False
        ).stdout.split()
        if left:
            self.errors.append(f"cleanup left {len(left)} containers/networks labelled {self.label}")

    # ---- one measurement each --------------------------------------------------------------------

    def wget_argv(self) -> list[str]:
        return [
            "run", "--rm", "--label", self.label, "--network", self.web_network,
            IMAGE, "wget", "-qO-", f"http://{WEB_ALIAS}/",
        ]  # fmt: skip

    def network_create(self) -> None:
        name = self.name_for("create")
        t0 = time.perf_counter()
        self.docker("network", "create", "--label", self.label, name)
        self.samples["network_create"].append(time.perf_counter() - t0)
        self.docker("network", "rm", name)

    def port_ready(self) -> None:
        port = benchkit.free_port()
        name = self.name_for("port")
        t0 = time.perf_counter()
        try:
            run = ["run", "-d", "--name", name, "--label", self.label, "-p", f"127.0.0.1:{port}:80"]
            proc = subprocess.Popen(
                benchkit.killed_after(120, *run, IMAGE, "httpd", "-f", "-p", "80"),
                env=benchkit.docker_env(self.host),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            returned: float | None = None
            deadline = t0 + READY_TIMEOUT_S
            while True:
                if returned is None and proc.poll() is not None:
                    returned = time.perf_counter() - t0
                    if proc.returncode != 0:
                        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                        raise RuntimeError(f"docker run -d -p: rc={proc.returncode}: {err}")
                if returned is None and not self.probe_early:
                    time.sleep(POLL_S / 5)
                    continue
                if http_answers(port):
                    ready = time.perf_counter() - t0
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"127.0.0.1:{port} gave no HTTP answer within {READY_TIMEOUT_S}s")
                time.sleep(POLL_S)
            if returned is None:
                proc.wait(timeout=60)
                returned = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(f"docker run -d -p: rc={proc.returncode} after the port answered")
            self.samples["port_ready"].append(ready)
            self.samples["run_detached"].append(returned)
        finally:
            self.docker("rm", "-f", name, check=False)

    def wget_by_name(self) -> None:
        t0 = time.perf_counter()
        res = self.docker(*self.wget_argv())
        elapsed = time.perf_counter() - t0
        if WEB_BODY not in res.stdout.decode(errors="replace"):
            raise RuntimeError(f"wget http://{WEB_ALIAS}/ printed {res.stdout[:80]!r}")
        self.samples["wget_by_name"].append(elapsed)

    def run_true(self, key: str, *network: str) -> None:
        t0 = time.perf_counter()
        self.docker("run", "--rm", "--label", self.label, *network, IMAGE, "true")
        self.samples[key].append(time.perf_counter() - t0)


def steps(t: Target) -> list[tuple[str, Callable[[], None]]]:
    return [
        ("network create", t.network_create),
        ("published port", t.port_ready),
        ("wget by name", t.wget_by_name),
        ("run bridge", lambda: t.run_true("run_bridge")),
        ("run none", lambda: t.run_true("run_none", "--network", "none")),
    ]


def measure(targets: list[Target], runs: int, warmup: int) -> None:
    """Every step for each daemon in turn, run by run; a failed step is recorded, not raised."""
    for i in range(warmup + runs):
        for t in targets:
            for label, step in steps(t):
                try:
                    step()
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    t.errors.append(f"run {i}: {label}: {exc}")
            if i < warmup:  # warm-up samples are dropped
                for values in t.samples.values():
                    values.clear()
            else:
                shown = ", ".join(f"{k} {t.samples[k][-1] * 1000:.0f}" for k, _ in METRICS if t.samples[k])
                print(f"[{i - warmup + 1}/{runs}] {t.name} (ms): {shown}", flush=True)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(targets: list[Target]) -> str:
    skiff = targets[0]
    ref = targets[1] if len(targets) > 1 else None
    names = [f"{t.name} {t.server}".strip() for t in targets]
    head = f"{'median (ms)':<42} {names[0]:>16} {names[1] if ref else '-':>22} {'ratio':>7}"
    rows = [head, "-" * len(head)]
    figures: list[tuple[str, float | None, float | None]] = [
        (label, skiff.median_ms(key), ref.median_ms(key) if ref else None) for key, label in METRICS
    ]
    figures.append(
        (
            "extra start latency, bridge over none",
            skiff.start_overhead_ms(),
            ref.start_overhead_ms() if ref else None,
        )
    )
    figures.append(
        (
            "  median of per-run differences",
            skiff.start_overhead_paired_ms(),
            ref.start_overhead_paired_ms() if ref else None,
        )
    )
    for label, a, b in figures:
        rows.append(f"{label:<42} {fmt(a):>16} {fmt(b):>22} {benchkit.ratio(a, b):>7}")
    for t in targets:
        rss = t.memory.get("rss_kib")
        if rss:
            rows.append(f"{t.name} engine RSS after the runs: {rss / 1024:.1f} MiB")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    parser.add_argument("--host", help="skiff's DOCKER_HOST (default: a throw-away skiffd)")
    parser.add_argument("--pid", type=int, help="--host's daemon PID (default: the socket's owner)")
    parser.add_argument("--reference", help="a dockerd measured in the same run (unix:// only)")
    parser.add_argument("-n", "--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--log-level", default="warn", help="the throw-away skiffd's log level")
    parser.add_argument(
        "--probe-early", action="store_true", help="probe the published port from `docker run`'s start"
    )
    parser.add_argument("--results-dir", type=Path, default=benchkit.RESULTS)
    args = parser.parse_args(argv)
    token = secrets.token_hex(4)
    targets: list[Target] = []

    with benchkit.daemon(args.host, args.log_level) as (skiff_host, skiff_pid):
        hosts = [("skiff", skiff_host, skiff_pid or args.pid)]
        if args.reference:
            hosts.append(("dockerd", args.reference, None))
        for name, host, pid in hosts:
            pid = pid or benchkit.owner_pid(host)
            targets.append(Target(name, host, benchkit.cli(host), token, pid, args.probe_early))
        try:
            for t in targets:
                t.prepare()
            measure(targets, max(1, args.runs), max(0, args.warmup))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            targets[0].errors.append(f"aborted: {exc}")
        finally:
            for t in targets:
                t.cleanup()
                if t.pid is not None:
                    t.memory = containers.engine_memory(t.pid)

    print(table(targets))
    benchkit.print_errors((t.name, t.errors) for t in targets)
    record = {
        **benchkit.result_head("network", python=False, load="load"),
        "params": {
            "runs": args.runs,
            "warmup": args.warmup,
            "host": args.host or "throw-away skiffd",
            "reference": args.reference,
            "poll_s": POLL_S,
            "connect_timeout_s": CONNECT_TIMEOUT_S,
            "probe_early": args.probe_early,
        },
        "aim": f"each skiff figure <= {AIM}x dockerd's",
        "targets": [t.summary() for t in targets],
    }
    benchkit.save(args.results_dir, "network-", record)
    return 1 if any(t.errors for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
