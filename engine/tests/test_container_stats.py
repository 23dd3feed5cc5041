"""engine/containers/stats.py: framing, precpu linking, stopped containers, clamping, networks.

The sampler reads a fake cgroup v1 tree and a fake /proc; the container service is a stub with
the three things the stats service uses (get, live, store_has).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers.model import Container
from engine.containers.service import ContainerService
from engine.containers.stats import Sampler, StatsService, empty_stats
from engine.events import EventBus
from runtime import cgroupstats
from runtime.cgroups import CgroupLayout, cgroups_path

MACHINE = 8 << 30
PERCPU = "cpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n"
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier
 lo: 120 2 0 0 0 0 0 0 120 2 0 0 0 0 0 0
 eth0: 796 10 0 0 0 0 0 0 350 4 0 0 0 0 0 0
"""


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


class FakeContainers:
    def __init__(self) -> None:
        self.by_name: dict[str, Container] = {}
        self.live: dict[str, object] = {}
        self.events = EventBus()

    def get(self, ref: str) -> Container:
        for c in self.by_name.values():
            if ref in (c.id, c.name.lstrip("/")):
                return c
        raise errdefs.NotFound(f"No such container: {ref}")

    def store_has(self, cid: str) -> bool:
        return any(c.id == cid for c in self.by_name.values())

    def add(self, name: str, *, pid: int = 0, network_mode: str = "bridge") -> Container:
        c = Container(
            id=(name * 64)[:64],
            name="/" + name,
            created="2026-01-01T00:00:00Z",
            image_id="sha256:" + "0" * 64,
            path="sh",
            args=[],
            config={},
            host_config={"NetworkMode": network_mode},
        )
        if pid:
            c.state.set_running(pid)
            self.live[c.id] = object()
        self.by_name[name] = c
        return c


class Tree:
    """A fake cgroup v1 hierarchy and /proc whose CPU counters grow by a step per read."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.layout = CgroupLayout(v1={k: base / k for k in ("cpu", "cpuacct", "memory", "pids", "blkio")})
        self.proc = base / "proc"
        self.ticks = itertools.count(2)

    def write(self, rel: str, text: str) -> None:
        path = self.base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def container(self, c: Container, *, limit: int = 9223372036854771712) -> None:
        cg = cgroups_path(c.id).lstrip("/")
        self.write(f"cpuacct/{cg}/cpuacct.usage", "1000\n")
        self.write(f"cpuacct/{cg}/cpuacct.usage_percpu", "600 400\n")
        self.write(f"cpuacct/{cg}/cpuacct.stat", "user 1\nsystem 0\n")
        self.write(f"memory/{cg}/memory.usage_in_bytes", "4096\n")
        self.write(f"memory/{cg}/memory.limit_in_bytes", f"{limit}\n")
        self.write(f"memory/{cg}/memory.stat", "total_inactive_file 1024\n")
        self.write(f"pids/{cg}/pids.current", "1\n")
        if c.state.pid:
            self.write(f"proc/{c.state.pid}/net/dev", NET_DEV)

    def bump_cpu(self, c: Container, total: int) -> None:
        self.write(f"cpuacct/{cgroups_path(c.id).lstrip('/')}/cpuacct.usage", f"{total}\n")
        n = next(self.ticks) * 100
        self.write(
            "proc/stat", f"cpu  {n} 0 0 0 0 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n"
        )


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path)
    t.write("proc/stat", "cpu  100 0 0 0 0 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n")
    return t


def service(containers: FakeContainers, tree: Tree, interval: float = 0.05) -> StatsService:
    clock = itertools.count(1_700_000_000_000_000_000, 1_000_000_000)
    sampler = Sampler(layout=tree.layout, proc=tree.proc, machine_memory=MACHINE, clock=lambda: next(clock))
    return StatsService(cast(ContainerService, containers), sampler, interval=interval)


async def collect(frames: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for frame in frames:
        out.append(frame)
        if len(out) == n:
            break
    await cast(Any, frames).aclose()
    return out


def test_single_sample_is_primed_with_a_previous_one(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("web", pid=4242)
    tree.container(c)
    svc = service(containers, tree)

    async def go() -> None:
        frames = await svc.stats("web", stream=False, one_shot=False)
        (frame,) = [f async for f in frames]
        assert frame["name"] == "/web" and frame["id"] == c.id
        assert frame["read"] == "2023-11-14T22:13:21Z" and frame["preread"] == "2023-11-14T22:13:20Z"
        assert frame["precpu_stats"]["cpu_usage"]["total_usage"] == 1000
        assert frame["precpu_stats"]["system_cpu_usage"] == frame["cpu_stats"]["system_cpu_usage"]
        assert frame["cpu_stats"]["online_cpus"] == 2
        assert frame["memory_stats"]["limit"] == MACHINE  # no limit: the machine's memory
        assert frame["pids_stats"] == {"current": 1}
        assert frame["num_procs"] == 0 and frame["storage_stats"] == {}
        assert list(frame["networks"]) == ["eth0"] and frame["networks"]["eth0"]["tx_bytes"] == 350
        assert list(frame) == [
            "read",
            "preread",
            "pids_stats",
            "blkio_stats",
            "num_procs",
            "storage_stats",
            "cpu_stats",
            "precpu_stats",
            "memory_stats",
            "name",
            "id",
            "networks",
        ]
        frames = await svc.stats("web", stream=False, one_shot=True)
        (frame,) = [f async for f in frames]
        assert frame["preread"] == "0001-01-01T00:00:00Z"
        assert frame["precpu_stats"] == {
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }

    run(go())


def test_stream_links_each_frame_to_the_previous(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("web", pid=4242)
    tree.container(c, limit=1 << 20)
    svc = service(containers, tree)

    async def go() -> None:
        frames = await svc.stats("web", stream=True, one_shot=False)
        seen: list[dict[str, Any]] = []
        async for frame in frames:
            seen.append(frame)
            tree.bump_cpu(c, 1000 + 500 * len(seen))
            if len(seen) == 3:
                break
        await cast(Any, frames).aclose()
        assert seen[0]["preread"] == "0001-01-01T00:00:00Z"
        assert "system_cpu_usage" not in seen[0]["precpu_stats"]
        for before, after in itertools.pairwise(seen):
            assert after["preread"] == before["read"]
            assert after["precpu_stats"] == before["cpu_stats"]
        usages = [f["cpu_stats"]["cpu_usage"]["total_usage"] for f in seen]
        assert usages == [1000, 1500, 2000]
        systems = [f["cpu_stats"]["system_cpu_usage"] for f in seen]
        assert systems[0] < systems[1] < systems[2]
        assert seen[0]["memory_stats"]["limit"] == 1 << 20  # a real limit is kept

    run(go())


def test_stopped_container_answers_zero_stats(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("idle")
    svc = service(containers, tree)

    async def go() -> None:
        frames = await svc.stats("idle", stream=False, one_shot=False)
        assert [f async for f in frames] == [empty_stats(c)]
        frames = await svc.stats("idle", stream=True, one_shot=False)
        streamed = await collect(frames, 2)
        assert streamed == [empty_stats(c), empty_stats(c)]
        frame = streamed[0]
        assert frame["read"] == "0001-01-01T00:00:00Z" and frame["memory_stats"] == {}
        assert frame["blkio_stats"] == dict.fromkeys(cgroupstats.BLKIO_LISTS)
        assert "networks" not in frame

    run(go())


def test_stream_ends_when_the_container_is_removed_and_zeroes_once_stopped(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("web", pid=4242)
    tree.container(c)
    svc = service(containers, tree)

    async def go() -> None:
        frames = await svc.stats("web", stream=True, one_shot=False)
        seen = []
        async for frame in frames:
            seen.append(frame)
            if len(seen) == 1:
                c.state.set_stopped(0)
                containers.live.clear()
            elif len(seen) == 2:
                del containers.by_name["web"]
        assert len(seen) == 2
        assert seen[1]["read"] == "0001-01-01T00:00:00Z"
        assert seen[1]["preread"] == seen[0]["read"]  # dockerd links zero frames too

    run(go())


def test_errors_and_network_modes(tree: Tree) -> None:
    containers = FakeContainers()
    svc = service(containers, tree)
    for mode in ("none", "host", "container:abc"):
        c = containers.add(mode.replace(":", ""), pid=4000 + len(containers.by_name), network_mode=mode)
        tree.container(c)

    async def go() -> None:
        with pytest.raises(errdefs.NotFound, match="No such container: nope"):
            await svc.stats("nope", stream=True, one_shot=True)
        with pytest.raises(errdefs.InvalidParameter, match="cannot have stream=true and one-shot=true"):
            await svc.stats("none", stream=True, one_shot=True)
        for name in ("none", "host", "containerabc"):
            (frame,) = [f async for f in await svc.stats(name, stream=False, one_shot=True)]
            assert "networks" not in frame and frame["pids_stats"] == {"current": 1}

    run(go())


def test_cgroup_gone_while_running_gives_zero_stats(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("web", pid=4242)  # no cgroup written
    svc = service(containers, tree)

    async def go() -> None:
        (frame,) = [f async for f in await svc.stats("web", stream=False, one_shot=True)]
        assert frame == empty_stats(c)

    run(go())


def test_stream_ends_when_the_daemon_shuts_down(tree: Tree) -> None:
    containers = FakeContainers()
    c = containers.add("web", pid=4242)
    tree.container(c)
    svc = service(containers, tree, interval=30)

    async def go() -> None:
        frames = await svc.stats("web", stream=True, one_shot=False)
        seen = []
        async for frame in frames:
            seen.append(frame)
            containers.events.close()  # what wiring.begin_shutdown does first
        assert len(seen) == 1  # no 30 s wait for the next sample

    run(go())
