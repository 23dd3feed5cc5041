"""OCI bundles under <exec_root>/bundles/<id>: config.json, the rootfs mount point, pid files.

The engine builds the spec (engine/containers/spec.py) and mounts the container's rootfs on
`Bundle.rootfs`; this module only owns the directory layout. The spec's root.path should
be "rootfs" (bundle-relative) and linux.cgroupsPath should come from `cgroups.cgroups_path`.
Exec processes get their process.json and pid file here too, named by exec id.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import errdefs
from storage.jsonfile import atomic_write_bytes


@dataclass(frozen=True)
class Bundle:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def init_pid_file(self) -> Path:
        return self.path / "init.pid"

    def exec_process_file(self, exec_id: str) -> Path:
        return self.path / f"exec-{exec_id}.json"

    def exec_pid_file(self, exec_id: str) -> Path:
        return self.path / f"exec-{exec_id}.pid"

    @classmethod
    def prepare(cls, root: Path, container_id: str) -> Bundle:
        """Make bundles/<id>/ with an empty rootfs/; config.json follows with `write_config`
        once the rootfs is mounted (the spec is built from what the mounted image holds)."""
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise errdefs.InvalidParameter(f"invalid container id: {container_id!r}")
        bundle = cls(root / container_id)
        # 0711: runc and a user-namespaced container init must traverse it, nobody list it.
        bundle.path.mkdir(mode=0o711, parents=True, exist_ok=True)
        bundle.rootfs.mkdir(mode=0o755, exist_ok=True)
        return bundle

    @classmethod
    def create(cls, root: Path, container_id: str, spec: dict[str, Any]) -> Bundle:
        """Make bundles/<id>/ with an empty rootfs/ and write config.json atomically."""
        bundle = cls.prepare(root, container_id)
        bundle.write_config(spec)
        return bundle

    def write_config(self, spec: dict[str, Any]) -> None:
        # runc's input, not a skiff state file, so no "schema" key; still written atomically
        # because a restarting daemon may read it back.
        atomic_write_bytes(self.config_path, json.dumps(spec, indent=None).encode(), mode=0o600)

    def read_config(self) -> dict[str, Any]:
        try:
            with open(self.config_path, "rb") as f:
                spec = json.load(f)
        except FileNotFoundError:
            raise errdefs.NotFound(f"bundle {self.path} has no config.json") from None
        if not isinstance(spec, dict):
            raise errdefs.InvalidParameter(f"{self.config_path}: not a JSON object")
        return spec

    def read_pid(self, pid_file: Path) -> int:
        with open(pid_file) as f:
            return int(f.read().strip())

    def remove(self, is_mounted: Callable[[Path], bool] = os.path.ismount) -> bool:
        """Delete the bundle unless something is still mounted on rootfs/; True once it is gone.

        rmtree through a live overlay mount would delete the container's files (and, via
        bind mounts, the host's), so a mounted bundle is left alone: the engine unmounts first.
        The engine, which mounts the rootfs, passes its mount-table check (``os.path.ismount``
        misses a bind mount from the same filesystem).
        Nothing is raised because this runs in clean-up paths (a failed start's undo, a task's
        exit, daemon start) that must go on; the result says whether a directory was left.
        """
        if not self.path.exists():
            return True
        if is_mounted(self.rootfs):
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return not self.path.exists()
