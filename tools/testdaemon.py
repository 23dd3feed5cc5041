"""Run a throw-away `skiffd` on a temporary socket, data root and exec root (for compat tests and bench).

Used as a context manager; teardown always runs: SIGTERM by PID, SIGKILL after a grace period,
force-delete any runc containers left under the exec root, unmount everything below the temp
directory (deepest first) and remove it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

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

    def __init__(self, binary: Path = SKIFFD, log_level: str = "debug", start_timeout: float = 30.0) -> None:
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
            # An empty config of its own, so /etc/skiff/daemon.json on the machine cannot leak in.
            "--config-file",
            str(self.config_file),
        ]
        self.config_file.write_text("{}\n")
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
            _delete_runc_containers(self.exec_root)
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
