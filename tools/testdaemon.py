"""Run a throw-away `skiffd` on a temporary socket, data root and exec root (for compat tests and bench).

Used as a context manager; teardown always runs: SIGTERM by PID, SIGKILL after a grace period,
force-delete any runc containers left under the exec root, remove the daemon's links and iptables
chains if it left any (``network.reconcile``, as a restarted daemon would), unmount everything
below the temp directory (deepest first) and remove it.

A test daemon never meets a dev daemon or another test run on the host: its default bridge is
``skd<6 hex>`` (so its iptables chains get a prefix of their own, ``SK<8 hex>``, and its bridges
and veths the matching link alias), its automatic subnets come from a random /16 of 10.176-10.207
(away from the network tests' 10.160.0.0/12 and the reference dockerd's 10.212.0.0/14), and it
leaves ``net.ipv4.ip_forward`` alone unless asked. Nothing may leave the machine: registries
resolve through a dead proxy, and the daemon REJECTs forwarding from each of its bridges to the
default-route interface (``outbound-reject-interface``, inside its own forward chain, so the rule
covers the user bridges it makes and goes with its chains).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from network.reconcile import DaemonMarks, Leftovers, daemon_marks, reconcile

ROOT = Path(__file__).resolve().parent.parent
SKIFFD = ROOT / ".venv" / "bin" / "skiffd"

# Nothing the daemon does in tests may leave the machine: registries resolve through a dead proxy.
OFFLINE_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


# Every daemon this process started, for the compat suite's check that the host is left as it was.
STARTED: list[SkiffDaemon] = []


def outside_interface() -> str | None:
    """The interface of the default route (``ip route show default``), or None without one."""
    try:
        out = subprocess.run(
            ["ip", "-4", "route", "show", "default"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    words = out.split()
    return words[words.index("dev") + 1] if "dev" in words[:-1] else None


def _reconcile(marks: DaemonMarks) -> Leftovers:
    """In a thread of its own: ``stop`` may be called from code that runs an event loop."""
    done: list[Leftovers] = []
    worker = threading.Thread(target=lambda: done.append(asyncio.run(reconcile(marks))), daemon=True)
    worker.start()
    worker.join(timeout=120)
    return done[0] if done else Leftovers()


def ping(socket_path: Path, timeout: float = 2.0) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=timeout) as client:
            return client.get("http://docker/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            # Field 5 is the mount point, with spaces etc. octal-escaped by the kernel.
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_below(path: Path) -> None:
    for _ in range(3):
        points = _mounts_below(path)
        if not points:
            return
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)


def _delete_runc_containers(exec_root: Path) -> None:
    """A daemon killed with SIGKILL leaves its containers running; runc state dirs hold state.json."""
    if not exec_root.exists() or shutil.which("runc") is None:
        return
    roots = {
        state.parent.parent for state in exec_root.rglob("state.json") if state.parent.parent != exec_root
    }
    for root in roots:
        for state in root.glob("*/state.json"):
            subprocess.run(
                ["runc", "--root", str(root), "delete", "--force", state.parent.name],
                capture_output=True,
                timeout=30,
            )


class SkiffDaemon:
    """One skiffd process; `host` is its DOCKER_HOST value."""

    def __init__(
        self,
        binary: Path = SKIFFD,
        log_level: str = "debug",
        start_timeout: float = 30.0,
        *,
        ip_forward: bool = False,
    ) -> None:
        self.binary = binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="skiff-test-"))
        self.data_root = self.tmp / "data"
        self.exec_root = self.tmp / "exec"
        self.socket = self.tmp / "skiff.sock"
        self.pidfile = self.tmp / "skiffd.pid"
        self.log_path = self.tmp / "skiffd.log"
        self.config_file = self.tmp / "daemon.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.bridge = f"skd{secrets.token_hex(3)}"
        self.address_pool = f"10.{176 + secrets.randbelow(32)}.0.0/16"
        self.ip_forward = ip_forward
        self.outside = outside_interface()
        self.marks: DaemonMarks = daemon_marks(self.bridge, self.data_root)
        # Found after the process ended, before the forced clean-up: what the daemon itself left.
        self.leftovers = Leftovers()
        self.leftover_sandboxes: list[str] = []
        self.exit_code: int | None = None
        self._examined = True  # whether the last run's leftovers were recorded

    @property
    def link_alias(self) -> str:
        return self.marks.link_alias

    @property
    def chain_names(self) -> set[str]:
        return self.marks.chain_names()

    def daemon_json(self) -> dict[str, object]:
        config: dict[str, object] = {
            "bridge": self.bridge,
            "default-address-pools": [{"base": self.address_pool, "size": 24}],
            "ip-forward": self.ip_forward,
        }
        if self.outside is not None:
            config["outbound-reject-interface"] = self.outside
        return config

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> SkiffDaemon:
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} missing: run `make install`")
        argv = [
            str(self.binary),
            "-H",
            self.host,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "--log-level",
            self.log_level,
            # A config of its own, so /etc/skiff/daemon.json on the machine cannot leak in.
            "--config-file",
            str(self.config_file),
        ]
        self.config_file.write_text(json.dumps(self.daemon_json(), indent=2) + "\n")
        if self not in STARTED:
            STARTED.append(self)
        self._examined = False
        # Unbuffered, so the log tail shown with a failing test is current.
        env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"skiffd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and ping(self.socket):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"skiffd did not answer /_ping within {self.start_timeout}s:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> int | None:
        """Stop and clean up; returns the exit code (None if it never started)."""
        code: int | None = None
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=grace)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.proc.pid, signal.SIGKILL)
                        self.proc.wait(timeout=10)
                code = self.proc.returncode
        finally:
            netns = self.exec_root / "netns"
            sandboxes = sorted(p.name for p in netns.iterdir()) if netns.is_dir() else []
            _delete_runc_containers(self.exec_root)
            leftovers = _reconcile(self.marks)
            if not self._examined:  # a second stop() finds only what the first one cleaned
                self._examined = True
                self.exit_code, self.leftover_sandboxes, self.leftovers = code, sandboxes, leftovers
            unmount_below(self.tmp)
            # rm -rf through a mount that would not go away could delete what it exposes.
            if not _mounts_below(self.tmp):
                shutil.rmtree(self.tmp, ignore_errors=True)
        return code

    def __enter__(self) -> SkiffDaemon:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
