#!/usr/bin/env python3
"""`docker cp` benchmark (issue 5): a 100 MiB directory tree of 1,000 files copied into and out of a
running container with the stock docker CLI, medians over N runs.

Measured against a throw-away skiffd (tools/testdaemon.py) or the daemon at --host, and with
--reference against a second daemon (the reference dockerd) in the same run. Runs alternate between
the two (A, B, A, B, ...) so both see the same machine load. Only loopback UNIX sockets are used.

Each daemon gets one `busybox sleep` container labelled org.skiff.bench=<token>; every copy goes to
a fresh path inside it and is deleted after the copy out. The container is removed at the end, so a
shared daemon is left as found (busybox:latest is loaded from .test-image/busybox.tar if missing).
The results are printed as a table and written to bench/results/cp-<UTC stamp>.json.

    bench/cp.py                                   # throw-away skiffd
    bench/cp.py --reference unix:///run/ref-docker/docker.sock --runs 7
    bench/cp.py --host unix:///run/skiff/skiff.sock
    bench/cp.py --reference unix:///run/ref-docker/docker.sock --also unix:///tmp/old/skiff.sock

--also (repeatable) adds more daemons to the same alternating rounds, e.g. a build of the previous
version for a before/after comparison under identical load; they get a column each.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit  # noqa: E402
from bench.benchkit import check  # noqa: E402

DIRS = 10


@dataclass
class Target:
    host: str
    server: str = ""
    container: str = ""
    into_s: list[float] = field(default_factory=list)
    out_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        return {
            "into_median_s": round(statistics.median(self.into_s), 4) if self.into_s else None,
            "out_median_s": round(statistics.median(self.out_s), 4) if self.out_s else None,
        }


def docker(host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    # Copying 100 MiB on a loaded machine may take longer than the usual two minutes.
    return benchkit.docker(host, *args, timeout=300)


def make_tree(root: Path, total_bytes: int, files: int) -> None:
    """``files`` files of random bytes (incompressible) spread over DIRS subdirectories."""
    each = total_bytes // files
    for i in range(files):
        sub = root / f"d{i % DIRS:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}.bin").write_bytes(os.urandom(each))


def tree_bytes(root: Path) -> tuple[int, int]:
    count = size = 0
    for path in root.rglob("*"):
        if path.is_file():
            count += 1
            size += path.stat().st_size
    return count, size


def prepare(target: Target, token: str) -> None:
    target.server = check(docker(target.host, "version", "--format", "{{.Server.Version}}")).strip()
    if docker(target.host, "image", "inspect", benchkit.IMAGE).returncode != 0:
        check(docker(target.host, "load", "-i", str(benchkit.BUSYBOX_TAR)))
    name = f"skiff-bench-cp-{token}-{secrets.token_hex(3)}"
    run = ["run", "-d", "--name", name, "--label", f"{benchkit.LABEL}={token}", benchkit.IMAGE]
    check(docker(target.host, *run, "sleep", "3600"))
    target.container = name


def one_run(target: Target, src: Path, work: Path, index: int, expected: tuple[int, int]) -> None:
    inside = f"/bench-{index}"
    out = work / f"out-{index}"
    try:
        start = time.perf_counter()
        check(docker(target.host, "cp", str(src), f"{target.container}:{inside}"))
        target.into_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        check(docker(target.host, "cp", f"{target.container}:{inside}", str(out)))
        target.out_s.append(time.perf_counter() - start)
        got = tree_bytes(out)
        if got != expected:
            target.errors.append(f"run {index}: copied back {got} (files, bytes), expected {expected}")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        target.errors.append(f"run {index}: {exc}")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        docker(target.host, "exec", target.container, "rm", "-rf", inside)


def table(target: Target, reference: Target | None, also: list[Target] | None = None) -> str:
    t, r = target.medians(), reference.medians() if reference else {}
    ref_name = reference.server if reference else "-"
    extra = also or []
    lines = [
        f"{'docker cp (median s)':<28} {target.server or 'skiff':>12} {ref_name:>14} {'skiff/ref':>10}"
        + "".join(f" {'also ' + str(i + 1):>12}" for i in range(len(extra)))
    ]
    for key, label in (("into_median_s", "into container"), ("out_median_s", "out of container")):
        a, b = t.get(key), r.get(key)
        shown = [v if v is not None else "-" for v in (a, b)]
        others = [o.medians().get(key) for o in extra]
        lines.append(
            f"{label:<28} {shown[0]:>12} {shown[1]:>14} {benchkit.ratio(a, b):>10}"
            + "".join(f" {v if v is not None else '-':>12}" for v in others)
        )
    for i, o in enumerate(extra):
        lines.append(f"also {i + 1}: {o.host} ({o.server})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    benchkit.add_daemon_options(parser)
    parser.add_argument(
        "--also", action="append", default=[], help="more daemons in the same rounds (repeatable)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--results-dir", type=Path, default=benchkit.RESULTS)
    args = parser.parse_args(argv)
    token = secrets.token_hex(4)

    with (
        tempfile.TemporaryDirectory(prefix="skiff-bench-cp-") as tmp,
        benchkit.daemon(args.host, log_level="info") as (host, _),
    ):
        work = Path(tmp)
        src = work / "tree"
        make_tree(src, args.mib * 1024 * 1024, args.files)
        expected = tree_bytes(src)
        targets = [Target(host)] + ([Target(args.reference)] if args.reference else [])
        targets += [Target(extra) for extra in args.also]
        try:
            for target in targets:
                prepare(target, token)
            for index in range(args.runs):
                for target in targets:
                    one_run(target, src, work, index, expected)
        finally:
            for target in targets:
                if target.container:
                    docker(target.host, "rm", "-f", target.container)

    target, reference = targets[0], targets[1] if args.reference else None
    also = targets[2:] if args.reference else targets[1:]
    print(table(target, reference, also))
    benchkit.print_errors((t.server or t.host, t.errors) for t in targets)
    record = {
        **benchkit.result_head(),
        "params": {
            "runs": args.runs,
            "files": args.files,
            "mib": args.mib,
            "host": args.host or "throw-away skiffd",
        },
        "target": {**asdict(target), **target.medians()},
        "reference": {**asdict(reference), **reference.medians()} if reference else None,
        "also": [{**asdict(o), **o.medians()} for o in also],
    }
    benchkit.save(args.results_dir, "cp-", record)
    return 1 if any(t.errors for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
