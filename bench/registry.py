"""Registry benchmark (issue 7): `docker push` and `docker pull` of a 5-layer, ~50 MiB image through
Debian's docker-registry on 127.0.0.1, for skiff and, in the same run, the reference dockerd.

The image is made here: five layers of random (incompressible) data, written as a `docker save`
archive. Every iteration, for each daemon in turn (A, B, A, B, so both see the same machine load):
  * the image is `docker load`-ed (layers stored uncompressed, as after a build or a commit), the
    registry restarted on empty storage (same port), and `docker push` timed: every layer is
    compressed and uploaded;
  * the image is removed (`docker rmi` of the tag, then of the image ID) and `docker pull` is timed;
  * the registry is emptied again and the pulled image pushed (timed): skiff keeps the registry's
    compressed blobs and sends them as they are, dockerd compresses again;
  * the image is removed.
The registry's access log gives the blob GETs of each pull, to show the pull really downloaded.

Nothing but loopback is reached: the registry listens on 127.0.0.1:<free port>, which both
daemons treat as an insecure (plain HTTP) registry by default. The registry's process is killed
by PID and its temporary storage removed at the end; on a shared daemon only what this run made
(its repository tags and its image ID) is removed.

    bench/registry.py                      # a throw-away skiffd (tools/testdaemon.py)
    bench/registry.py --host unix:///run/skiff/skiff.sock \\
        --reference unix:///run/ref-docker/docker.sock
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ heads sys.path: the repository root goes there instead (see bench/benchkit.py).
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)

from bench import benchkit  # noqa: E402

DOCKER_REGISTRY = "/usr/bin/docker-registry"
LAYERS = 5
LAYER_BYTES = 10 << 20
EPOCH = "2026-01-01T00:00:00Z"
# Pushes and pulls of 50 MiB on a loaded machine may take longer than the usual two minutes.
CLI_TIMEOUT_S = 300


# --- the image ------------------------------------------------------------------------------------


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1767225600
    tar.addfile(info, io.BytesIO(data))


def write_image(path: Path, tag: str) -> str:
    """A `docker save` archive of LAYERS layers of LAYER_BYTES random bytes each; returns the image ID."""
    layers: list[bytes] = []
    for i in range(LAYERS):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _tar_member(tar, f"bench/layer{i}.bin", os.urandom(LAYER_BYTES))
        layers.append(buf.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = {
        "architecture": "amd64" if platform.machine() == "x86_64" else "arm64",
        "os": "linux",
        "created": EPOCH,
        "config": {"Cmd": ["/bench/none"], "Labels": {"org.skiff.bench": "registry"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": f"bench layer {i}"} for i in range(LAYERS)],
    }
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    image_hex = hashlib.sha256(config_bytes).hexdigest()
    with tarfile.open(path, mode="w") as tar:
        names = []
        for diff_id, layer in zip(diff_ids, layers, strict=True):
            name = f"{diff_id[7:]}/layer.tar"
            _tar_member(tar, name, layer)
            names.append(name)
        _tar_member(tar, f"{image_hex}.json", config_bytes)
        manifest = [{"Config": f"{image_hex}.json", "RepoTags": [tag], "Layers": names}]
        _tar_member(tar, "manifest.json", json.dumps(manifest).encode())
    return "sha256:" + image_hex


# --- the registry ---------------------------------------------------------------------------------


class Registry:
    """docker-registry on 127.0.0.1:<port>; ``reset()`` restarts it on empty storage."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = benchkit.free_port()
        self.data = tmp / "data"
        self.log = tmp / "registry.log"
        self.config = tmp / "config.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        tmp.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.data}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: {secrets.token_hex(16)}\n"
        )

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [DOCKER_REGISTRY, "serve", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry does not listen on {self.host}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def reset(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.log.write_bytes(b"")
        self.start()

    def blob_gets(self) -> int:
        text = self.log.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if '"GET /v2/' in line and "/blobs/sha256:" in line)


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    host: str
    docker: benchkit.Docker = field(repr=False)
    repo: str = ""
    load_ref: str = ""  # the tag of the `docker load` archive
    push_s: list[float] = field(default_factory=list)
    push_pulled_s: list[float] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    pull_blob_gets: list[int] = field(default_factory=list)
    server: str = ""

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "docker"}
        d["push_median_s"] = statistics.median(self.push_s) if self.push_s else None
        d["push_pulled_median_s"] = statistics.median(self.push_pulled_s) if self.push_pulled_s else None
        d["pull_median_s"] = statistics.median(self.pull_s) if self.pull_s else None
        return d


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def remove_image(t: Target, image_id: str) -> None:
    t.docker("rmi", f"{t.repo}:1", check=False)
    t.docker("rmi", "-f", image_id, check=False)


def iteration(t: Target, registry: Registry, image_id: str, archive: Path) -> None:
    ref = f"{t.repo}:1"
    # As made by `docker load`: the layers are stored uncompressed and every push compresses them.
    t.docker("load", "-i", str(archive))
    t.docker("tag", t.load_ref, ref)
    t.docker("rmi", t.load_ref)
    registry.reset()
    t.push_s.append(timed(lambda: t.docker("push", ref)))
    remove_image(t, image_id)
    if t.docker("image", "inspect", image_id, check=False).returncode == 0:
        raise RuntimeError(f"{t.name}: image still present after rmi")
    registry.log.write_bytes(b"")
    t.pull_s.append(timed(lambda: t.docker("pull", ref)))
    t.pull_blob_gets.append(registry.blob_gets())
    got = t.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.decode().strip()
    if got != image_id:
        raise RuntimeError(f"{t.name}: pulled {got}, expected {image_id}")
    # As pulled: skiff keeps the registry's compressed blobs, dockerd compresses again.
    registry.reset()
    t.push_pulled_s.append(timed(lambda: t.docker("push", ref)))
    remove_image(t, image_id)


def table(targets: list[Target]) -> str:
    skiff = targets[0].summary()
    ref = targets[1].summary() if len(targets) > 1 else None
    names = [f"{t.name} {t.server}" if t.server else t.name for t in targets]
    rows = [f"{'median (s)':<28} {names[0]:>16} {names[1] if ref else '-':>16} {'ratio':>8}"]
    for key, label in (
        ("push_median_s", "push, loaded image"),
        ("pull_median_s", "pull after rmi"),
        ("push_pulled_median_s", "push, pulled image"),
    ):
        a = skiff[key]
        b = ref[key] if ref else None
        shown_b = "-" if b is None else f"{b:.2f}"
        rows.append(f"{label:<28} {a:>16.2f} {shown_b:>16} {benchkit.ratio(a, b):>8}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = benchkit.arg_parser(__doc__)
    parser.add_argument("--host", help="skiff's DOCKER_HOST (default: a throw-away skiffd)")
    parser.add_argument("--reference", help="a dockerd to measure in the same run (unix:// only)")
    parser.add_argument("-n", "--iterations", type=int, default=5)
    parser.add_argument("--results-dir", type=Path, default=benchkit.RESULTS)
    args = parser.parse_args(argv)
    if not os.access(DOCKER_REGISTRY, os.X_OK):
        raise SystemExit(f"{DOCKER_REGISTRY} missing (Debian's docker-registry)")

    token = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="skiff-bench-registry-"))
    targets: list[Target] = []
    image_id = ""
    registry: Registry | None = None
    try:
        registry = Registry(tmp / "registry")
        with benchkit.daemon(args.host) as (skiff_host, _):
            hosts = [("skiff", skiff_host)] + ([("reference", args.reference)] if args.reference else [])
            for name, host in hosts:
                t = Target(
                    name,
                    host,
                    benchkit.cli(host, timeout=CLI_TIMEOUT_S),
                    repo=f"{registry.host}/bench-{token}/{name}",
                    load_ref=f"skiff-bench-registry-{token}:1",
                )
                t.server = t.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
                targets.append(t)
            archive = tmp / "image.tar"
            image_id = write_image(archive, targets[0].load_ref)
            try:
                for i in range(args.iterations):
                    for t in targets:
                        iteration(t, registry, image_id, archive)
                        print(
                            f"[{i + 1}/{args.iterations}] {t.name}: push {t.push_s[-1]:.2f}s"
                            f" pull {t.pull_s[-1]:.2f}s ({t.pull_blob_gets[-1]} blob GETs)"
                            f" push-pulled {t.push_pulled_s[-1]:.2f}s",
                            flush=True,
                        )
            finally:
                for t in targets:
                    t.docker("rmi", f"{t.repo}:1", check=False)
                    t.docker("rmi", t.load_ref, check=False)
                    t.docker("rmi", "-f", image_id, check=False)
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(table(targets))
    record = {
        **benchkit.result_head("registry", python=False, load="load"),
        "image": {"layers": LAYERS, "layer_bytes": LAYER_BYTES, "id": image_id},
        "params": {"iterations": args.iterations, "host": args.host, "reference": args.reference},
        "targets": [t.summary() for t in targets],
    }
    benchkit.save(args.results_dir, "registry-", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
