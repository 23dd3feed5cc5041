"""Daemon configuration: flags and config-file keys, named as dockerd names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DaemonConfig:
    hosts: tuple[str, ...] = ("unix:///run/skiff/skiff.sock",)
    data_root: Path = Path("/var/lib/skiff")
    exec_root: Path = Path("/run/skiff")
    group: str | None = None
    pidfile: Path | None = None
    log_level: str = "info"
    default_runtime: str = "runc"
    runtimes: dict[str, str] = field(default_factory=lambda: {"runc": "runc"})
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
