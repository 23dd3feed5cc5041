"""``GET /containers/{id}/stats``: samples of a container's resource use in dockerd's JSON shape.

As dockerd (daemon/stats.go, daemon/stats/collector.go): a stream sends one object a second, the
first right away, each carrying the previous sample's ``cpu_stats`` and ``read`` as
``precpu_stats`` and ``preread`` (zero on the first). Without streaming, a running container is
sampled twice a second apart so that ``precpu_stats`` is filled, unless ``one-shot``. A container
that is not running answers a zero object holding only its name and id (every second when
streaming, until it starts again or is removed). Streams end when the daemon shuts down.

The cgroup and /proc reads (runtime.cgroupstats) run in worker threads. A memory limit above the
machine's memory (no limit set) is reported as the machine's memory, as dockerd does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs
from engine.containers import filters as psfilters
from engine.containers.model import Container
from engine.hostinfo import mem_total
from engine.images.timestamps import ZERO_TIME, Time
from runtime import cgroupstats
from runtime.cgroups import CgroupLayout, cgroups_path

if TYPE_CHECKING:
    from engine.containers.service import ContainerService

INTERVAL = 1.0
# Network modes whose container has no endpoint of its own: dockerd leaves ``networks`` out.
_NO_ENDPOINTS = ("none", "host")


def zero_cpu() -> dict[str, Any]:
    return {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def empty_stats(c: Container) -> dict[str, Any]:
    """What dockerd answers for a container that is not running: Go's zero StatsJSON, name and id."""
    return {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": dict.fromkeys(cgroupstats.BLKIO_LISTS),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": zero_cpu(),
        "precpu_stats": zero_cpu(),
        "memory_stats": {},
        "name": c.name,
        "id": c.id,
    }


def _rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    return Time(seconds, nanos).rfc3339nano()


def has_own_network(c: Container) -> bool:
    mode = str(c.host_config.get("NetworkMode") or "default")
    return mode not in _NO_ENDPOINTS and not mode.startswith("container:")


@dataclass
class Sampler:
    """Reads one sample; the host paths are parameters so tests can point them at fixture trees."""

    layout: CgroupLayout | None = None
    proc: Path = Path("/proc")
    machine_memory: int = 0
    clock: Callable[[], int] = time.time_ns
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _layout(self) -> CgroupLayout:
        async with self._lock:
            if self.layout is None:
                self.layout = await asyncio.to_thread(CgroupLayout.detect)
            return self.layout

    async def sample(self, c: Container) -> dict[str, Any] | None:
        """A running container's figures, without the ``pre`` fields; None if its cgroup is gone."""
        layout = await self._layout()
        pid = c.state.pid
        own_network = has_own_network(c)
        return await asyncio.to_thread(self._read, layout, c, pid, own_network)

    def _read(self, layout: CgroupLayout, c: Container, pid: int, own_network: bool) -> dict[str, Any] | None:
        figures = cgroupstats.read_cgroup(layout, cgroups_path(c.id))
        if figures is None:
            return None
        # Sampled right after the cgroup, as dockerd does, to keep the CPU percentage's noise low.
        system_usage, online_cpus = cgroupstats.read_system_cpu(self.proc)
        read = _rfc3339(self.clock())
        cpu = figures["cpu_stats"]
        cpu["system_cpu_usage"] = system_usage
        cpu["online_cpus"] = online_cpus
        cpu["throttling_data"] = cpu.pop("throttling_data")  # keep Go's field order
        memory = figures["memory_stats"]
        if self.machine_memory > 0 and memory.get("limit", 0) > self.machine_memory:
            memory["limit"] = self.machine_memory
        out: dict[str, Any] = {
            "read": read,
            "preread": ZERO_TIME,
            "pids_stats": figures["pids_stats"],
            "blkio_stats": figures["blkio_stats"],
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": cpu,
            "precpu_stats": zero_cpu(),
            "memory_stats": memory,
            "name": c.name,
            "id": c.id,
        }
        if own_network and pid:
            networks = cgroupstats.read_networks(pid, self.proc)
            if networks:  # omitempty: a namespace with only loopback has none to report
                out["networks"] = networks
        return out


class StatsService:
    def __init__(
        self, containers: ContainerService, sampler: Sampler | None = None, interval: float = INTERVAL
    ) -> None:
        self.containers = containers
        self.sampler = sampler or Sampler(machine_memory=_machine_memory())
        self.interval = interval

    def _running(self, c: Container) -> bool:
        return psfilters.is_running(c) and not c.state.restarting and c.id in self.containers.live

    async def _frame(self, c: Container) -> dict[str, Any]:
        if self._running(c):
            sample = await self.sampler.sample(c)
            if sample is not None:
                return sample
        return empty_stats(c)

    async def stats(self, ref: str, *, stream: bool, one_shot: bool) -> AsyncIterator[dict[str, Any]]:
        """Checks the request (404, 400) before returning; the iterator then yields the objects."""
        c = self.containers.get(ref)
        if stream and one_shot:
            raise errdefs.InvalidParameter("cannot have stream=true and one-shot=true")
        if not stream:
            return self._single(c, one_shot)
        return self._stream(c)

    async def _single(self, c: Container, one_shot: bool) -> AsyncIterator[dict[str, Any]]:
        if not self._running(c):
            yield empty_stats(c)
            return
        first = await self._frame(c)
        if one_shot:
            yield first
            return
        # Primes the CPU figures, so that a single answer still gives a CPU percentage.
        await asyncio.sleep(self.interval)
        second = await self._frame(c)
        _link(second, first)
        yield second

    async def _stream(self, c: Container) -> AsyncIterator[dict[str, Any]]:
        previous: dict[str, Any] | None = None
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                c = self.containers.get(c.id)  # the current record, state included
            except errdefs.NotFound:
                return  # removed: dockerd closes the stream
            frame = await self._frame(c)
            if previous is not None:
                _link(frame, previous)
            yield frame
            previous = frame
            if await self._daemon_closing(max(0.0, self.interval - (loop.time() - started))):
                return

    async def _daemon_closing(self, delay: float) -> bool:
        """Waits ``delay``; True once the daemon shuts down, so that open streams let it exit."""
        try:
            await asyncio.wait_for(self.containers.events.wait_closed(), delay)
        except TimeoutError:
            return False
        return True


def _link(frame: dict[str, Any], previous: dict[str, Any]) -> None:
    frame["preread"] = previous["read"]
    frame["precpu_stats"] = previous["cpu_stats"]


def _machine_memory() -> int:
    try:
        return mem_total()
    except (OSError, ValueError):
        return 0
