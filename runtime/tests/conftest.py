"""Fixtures for runtime tests: a busybox rootfs, a minimal OCI spec, an isolated runc root.

Everything a privileged test creates (runc containers under a private --root, cgroups under a
private parent, temp dirs) is removed by finalizers, also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runtime import cgroups
from runtime.bundle import Bundle
from runtime.reaper import Reaper, set_child_subreaper

BUSYBOX = Path("/usr/bin/busybox")
APPLETS = (
    "sh",
    "echo",
    "cat",
    "sleep",
    "head",
    "tr",
    "stty",
    "true",
    "false",
    "ls",
    "yes",
    "dd",
    "kill",
    "env",
)


def make_rootfs(rootfs: Path) -> None:
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "notexec").write_text("not a program\n")


def write_tree(base: Path, files: dict[str, str]) -> None:
    """A fake cgroup or /proc tree: relative path -> content, parents made as needed."""
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def minimal_spec(
    args: list[str],
    *,
    cgroups_path: str,
    terminal: bool = False,
    pid_namespace: bool = True,
    memory_limit: int | None = None,
) -> dict[str, Any]:
    caps = ["CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID"]
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit is not None:
        resources["memory"] = {"limit": memory_limit, "swap": memory_limit}
    namespaces = [{"type": t} for t in ("network", "ipc", "uts", "mount")]
    if pid_namespace:
        namespaces.append({"type": "pid"})
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "skiff-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    }


@dataclass
class RuncEnv:
    """A private runc world: its --root, bundles dir, shared rootfs and cgroup parent."""

    base: Path
    cgroup_parent: str
    ids: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.base / "runc"

    def bundle(
        self,
        args: list[str],
        *,
        terminal: bool = False,
        pid_namespace: bool = True,
        memory_limit: int | None = None,
    ) -> tuple[str, Bundle]:
        cid = "t" + uuid.uuid4().hex[:12]
        self.ids.append(cid)
        spec = minimal_spec(
            args,
            cgroups_path=cgroups.cgroups_path(cid, self.cgroup_parent),
            terminal=terminal,
            pid_namespace=pid_namespace,
            memory_limit=memory_limit,
        )
        bundle = Bundle.create(self.base / "bundles", cid, spec)
        bundle.rootfs.rmdir()
        shutil.copytree(self.base / "rootfs", bundle.rootfs, symlinks=True)
        return cid, bundle

    def cgroup_path(self, cid: str) -> str:
        return cgroups.cgroups_path(cid, self.cgroup_parent)


def runc_ids(root: Path) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "--format", "json"], capture_output=True, check=False
    ).stdout
    return [c["id"] for c in (json.loads(out or b"null") or [])]


@pytest.fixture
def runc_env(tmp_path: Path) -> Iterator[RuncEnv]:
    if os.geteuid() != 0 or shutil.which("runc") is None or not BUSYBOX.exists():
        pytest.skip("needs root, runc and busybox-static")
    env = RuncEnv(base=tmp_path, cgroup_parent=f"/skiff-test-{uuid.uuid4().hex[:8]}")
    make_rootfs(tmp_path / "rootfs")
    try:
        yield env
    finally:
        for cid in set(runc_ids(env.root)) | set(env.ids):
            subprocess.run(
                ["runc", "--root", str(env.root), "delete", "--force", cid], capture_output=True, check=False
            )
        layout = cgroups.CgroupLayout.detect()
        for cid in env.ids:
            cgroups.remove(layout, env.cgroup_path(cid))
        cgroups.remove(layout, env.cgroup_parent)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_subreaper_leak() -> Iterator[None]:
    """The tests make the pytest process a subreaper; undo it so other packages' tests,
    sharing this process, see orphans go to PID 1 as usual, and reap what we adopted."""
    yield
    set_child_subreaper(False)
    reaper = Reaper()
    reaper.sweep()
    time.sleep(0.05)
    reaper.sweep()
