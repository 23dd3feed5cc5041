"""``GET /version`` and ``GET /info`` assembled in dockerd's shapes (``system.Info``, ``types.Version``).

Field order follows dockerd's Go structs so output diffs against a reference dockerd stay
readable. Figures are true ones: host facts come from ``engine.hostinfo``, image and container
counts from the services that own them, the listener count from the event bus. What skiff does
not have (swarm, containerd, plugins, CDI, seccomp) is reported as dockerd reports its absence.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine import hostinfo
from engine.config import DaemonConfig
from engine.images.timestamps import Time
from storage.jsonfile import atomic_write_json, read_json

if TYPE_CHECKING:
    from engine.events import EventBus

API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
INDEX_SERVER = "https://index.docker.io/v1/"
INIT_BINARY = "docker-init"
PLATFORM_NAME = "skiff"
GIT_COMMIT = "unknown"
ENGINE_ID_FILE = "engine-id.json"
# Loopback registries are always insecure (plain HTTP allowed), as in dockerd.
DEFAULT_INSECURE_CIDRS = ("::1/128", "127.0.0.0/8")


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skiff")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


@dataclass(frozen=True)
class ContainerCounts:
    running: int = 0
    paused: int = 0
    stopped: int = 0

    @property
    def total(self) -> int:
        return self.running + self.paused + self.stopped


class ImageCounter(Protocol):
    def count(self) -> int: ...


def _rfc3339nano(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return Time(seconds, nanos, time.localtime(seconds).tm_gmtoff).rfc3339nano()


@functools.cache
def _build_time() -> str:
    """When this engine was installed: dockerd reports its binary's build time."""
    ns = Path(__file__).stat().st_mtime_ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    return Time(seconds, nanos).rfc3339nano()


class SystemService:
    def __init__(
        self,
        config: DaemonConfig,
        *,
        images: ImageCounter,
        events: EventBus | None = None,
        container_counts: Callable[[], ContainerCounts] | None = None,
    ) -> None:
        self.config = config
        self.images = images
        self.events = events
        # Set later by the composition root once the container service exists.
        self.container_counts = container_counts
        self.engine_id = self._load_engine_id()
        self.version_string = engine_version()
        self._tools: tuple[hostinfo.ToolVersion | None, hostinfo.ToolVersion | None] | None = None
        self._tools_lock = asyncio.Lock()

    def _load_engine_id(self) -> str:
        """A UUID kept in the data root, like dockerd's ``engine-id`` file."""
        path = self.config.data_root / ENGINE_ID_FILE
        try:
            stored = read_json(path)
            if isinstance(stored, dict) and isinstance(stored.get("id"), str):
                return str(stored["id"])
        except (OSError, ValueError):
            pass
        engine_id = str(uuid.uuid4())
        atomic_write_json(path, {"schema": 1, "id": engine_id}, mode=0o600)
        return engine_id

    async def _tool_versions(self) -> tuple[hostinfo.ToolVersion | None, hostinfo.ToolVersion | None]:
        async with self._tools_lock:
            if self._tools is None:
                runtime_path = self.config.runtimes.get(self.config.default_runtime, "runc")
                runc, init = await asyncio.gather(
                    hostinfo.tool_version(runtime_path), hostinfo.tool_version(INIT_BINARY)
                )
                self._tools = (runc, init)
            return self._tools

    async def version(self) -> dict[str, Any]:
        runc, init = await self._tool_versions()
        kernel = os.uname().release
        arch = hostinfo.go_arch()
        go_version = f"python{platform.python_version()}"
        build_time = _build_time()
        components: list[dict[str, Any]] = [
            {
                "Name": "Engine",
                "Version": self.version_string,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "Arch": arch,
                    "BuildTime": build_time,
                    "Experimental": "false",
                    "GitCommit": GIT_COMMIT,
                    "GoVersion": go_version,
                    "KernelVersion": kernel,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Os": "linux",
                },
            }
        ]
        if runc is not None:
            components.append(
                {"Name": "runc", "Version": runc.version, "Details": {"GitCommit": runc.commit}}
            )
        if init is not None:
            components.append(
                {"Name": INIT_BINARY, "Version": init.version, "Details": {"GitCommit": init.commit}}
            )
        return {
            "Platform": {"Name": PLATFORM_NAME},
            "Components": components,
            "Version": self.version_string,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": GIT_COMMIT,
            "GoVersion": go_version,
            "Os": "linux",
            "Arch": arch,
            "KernelVersion": kernel,
            "BuildTime": build_time,
        }

    async def info(self) -> dict[str, Any]:
        facts = await asyncio.to_thread(hostinfo.probe_host, self.config.data_root)
        runc, init = await self._tool_versions()
        counts = self.container_counts() if self.container_counts is not None else ContainerCounts()
        cg = facts.cgroups
        info: dict[str, Any] = {
            "ID": self.engine_id,
            "Containers": counts.total,
            "ContainersRunning": counts.running,
            "ContainersPaused": counts.paused,
            "ContainersStopped": counts.stopped,
            "Images": self.images.count(),
            "Driver": "overlay2",
            "DriverStatus": [
                ["Backing Filesystem", facts.backing_filesystem],
                ["Supports d_type", "true"],
                ["Using metacopy", "false"],
                ["Native Overlay Diff", "true"],
                ["userxattr", "false"],
            ],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "null"],
                "Authorization": None,
                "Log": ["json-file"],
            },
            "MemoryLimit": cg.memory_limit,
            "SwapLimit": cg.swap_limit,
        }
        if cg.kernel_memory_tcp:  # omitempty in dockerd
            info["KernelMemoryTCP"] = True
        info.update(
            {
                "CpuCfsPeriod": cg.cpu_cfs_period,
                "CpuCfsQuota": cg.cpu_cfs_quota,
                "CPUShares": cg.cpu_shares,
                "CPUSet": cg.cpuset,
                "PidsLimit": cg.pids_limit,
                "IPv4Forwarding": facts.ipv4_forwarding,
                "Debug": self.config.log_level == "debug",
                "NFd": facts.open_fds,
                "OomKillDisable": cg.oom_kill_disable,
                # Go reports goroutines; the closest live figure here is the loop's task count.
                "NGoroutines": len(asyncio.all_tasks()),
                "SystemTime": _rfc3339nano(time.time_ns()),
                "LoggingDriver": "json-file",
                "CgroupDriver": "cgroupfs",
                "CgroupVersion": cg.version,
                "NEventsListener": self.events.listener_count if self.events is not None else 0,
                "KernelVersion": facts.kernel_version,
                "OperatingSystem": facts.operating_system,
                "OSVersion": facts.os_version,
                "OSType": "linux",
                "Architecture": facts.architecture,
                "IndexServerAddress": INDEX_SERVER,
                "RegistryConfig": self._registry_config(),
                "NCPU": facts.ncpu,
                "MemTotal": facts.mem_total,
                "GenericResources": None,
                "DockerRootDir": str(self.config.data_root),
                "HttpProxy": hostinfo.proxy_env("http_proxy"),
                "HttpsProxy": hostinfo.proxy_env("https_proxy"),
                "NoProxy": hostinfo.proxy_env("no_proxy"),
                "Name": facts.hostname,
                "Labels": list(self.config.labels),
                "ExperimentalBuild": False,
                "ServerVersion": self.version_string,
                "Runtimes": {name: {"path": path} for name, path in sorted(self.config.runtimes.items())},
                "DefaultRuntime": self.config.default_runtime,
                "Swarm": {
                    "NodeID": "",
                    "NodeAddr": "",
                    "LocalNodeState": "inactive",
                    "ControlAvailable": False,
                    "Error": "",
                    "RemoteManagers": None,
                },
                "LiveRestoreEnabled": False,
                "Isolation": "",
                "InitBinary": INIT_BINARY,
                "ContainerdCommit": {"ID": ""},
                "RuncCommit": {"ID": runc.commit if runc else ""},
                "InitCommit": {"ID": init.commit if init else ""},
                # No seccomp/AppArmor profile is applied to containers; cgroupns only on v2.
                "SecurityOptions": ["name=cgroupns"] if cg.version == "2" else [],
                "FirewallBackend": {"Driver": "iptables"},
                "CDISpecDirs": [],
                # Go's nil slice when there is nothing to warn about.
                "Warnings": self._warnings(facts) or None,
            }
        )
        return info

    def _registry_config(self) -> dict[str, Any]:
        mirrors = [m.rstrip("/") + "/" for m in self.config.registry_mirrors]
        cidrs = list(DEFAULT_INSECURE_CIDRS)
        index: dict[str, Any] = {
            "docker.io": {"Name": "docker.io", "Mirrors": mirrors, "Secure": True, "Official": True}
        }
        for entry in self.config.insecure_registries:
            if "/" in entry and entry.split("/", 1)[1].isdigit():
                if entry not in cidrs:
                    cidrs.append(entry)
            else:
                index[entry] = {"Name": entry, "Mirrors": [], "Secure": False, "Official": False}
        return {"InsecureRegistryCIDRs": cidrs, "IndexConfigs": index, "Mirrors": mirrors}

    @staticmethod
    def _warnings(facts: hostinfo.HostFacts) -> list[str]:
        cg = facts.cgroups
        checks = [
            (cg.memory_limit, "WARNING: No memory limit support"),
            (cg.swap_limit, "WARNING: No swap limit support"),
            (cg.version != "1" or cg.kernel_memory_tcp, "WARNING: No kernel memory TCP limit support"),
            (cg.version != "1" or cg.oom_kill_disable, "WARNING: No oom kill disable support"),
            (cg.cpu_cfs_quota, "WARNING: No cpu cfs quota support"),
            (cg.cpu_cfs_period, "WARNING: No cpu cfs period support"),
            (cg.cpu_shares, "WARNING: No cpu shares support"),
            (cg.cpuset, "WARNING: No cpuset support"),
            (facts.ipv4_forwarding, "WARNING: IPv4 forwarding is disabled"),
            (facts.bridge_nf_iptables, "WARNING: bridge-nf-call-iptables is disabled"),
            (facts.bridge_nf_ip6tables, "WARNING: bridge-nf-call-ip6tables is disabled"),
        ]
        return [message for ok, message in checks if not ok]
