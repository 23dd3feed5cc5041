"""ContainerAdmin on the FakeRuntime with a real overlay snapshotter on a temp dir: list (sizes,
image shown), inspect, rename, pause/unpause, update, top (the host's real ps), prune, changes and
export. Only the tests that make whiteouts, opaque dirs or mounts need root (marked privileged).

Texts and shapes as the reference dockerd answers them (dockerd 28 wording where they differ).
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers import top, update
from engine.containers.admin import ContainerAdmin
from engine.containers.model import Container
from engine.containers.service import ContainerService
from engine.containers.store import ContainerStore
from engine.events import EventBus
from engine.images.tests.imagetars import layer_tar
from runtime.fake import FakeRuntime
from storage.content import ContentStore
from storage.layers import LayerStore
from storage.mount import Mount, is_mounted
from storage.snapshots import OverlaySnapshotter

IMAGE_ID = "sha256:" + "a" * 64
OTHER_ID = "sha256:" + "b" * 64
BASE_FILES = {
    "bin/sh": b"#!shell\n",
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "home/u/notes": b"notes\n",
    "data/keep": b"keep\n",
}
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


class NoMountSnapshotter(OverlaySnapshotter):
    """The FakeRuntime needs no root filesystem: starting a container mounts nothing."""

    def mounts(self, key: str) -> list[Mount]:
        return []


class FakeImages:
    def __init__(self, chain: str) -> None:
        self.chain = chain
        self.refs = {"busybox": IMAGE_ID, "busybox:latest": IMAGE_ID, IMAGE_ID: IMAGE_ID, "other": OTHER_ID}
        self.children_of: dict[str, list[str]] = {}

    async def resolve(self, ref: str) -> Any:
        if ref not in self.refs:
            raise errdefs.no_such_image(ref)
        return SimpleNamespace(id=self.refs[ref])

    def image_config(self, image: Any) -> dict[str, Any]:
        return {"Env": ["PATH=/bin"], "Cmd": ["sleep", "300"], "Labels": {}}

    def top_chain_id(self, image: Any) -> str | None:
        return self.chain

    def children(self, image_id: str) -> list[str]:
        return self.children_of.get(image_id, [])


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.runtime = FakeRuntime()
        self.bus = EventBus()
        self.snapshotter = NoMountSnapshotter(tmp / "overlay")
        self.layers = LayerStore(ContentStore(tmp / "content"), self.snapshotter)
        applied = self.layers.apply(None, io.BytesIO(layer_tar(BASE_FILES)))
        self.chain = applied.chain_id
        self.images = FakeImages(self.chain)
        self.service = ContainerService(
            store=ContainerStore(tmp / "containers"),
            images=cast(Any, self.images),
            layers=self.layers,
            runtime=self.runtime,
            events=self.bus,
            exec_root=tmp / "exec",
        )
        self.exec_ids: dict[str, list[str]] = {}
        self.pids: list[int] = [os.getpid()]
        self.admin = ContainerAdmin(
            self.service, exec_ids=lambda cid: self.exec_ids.get(cid, []), pids_of=self._pids
        )

    async def _pids(self, c: Container) -> list[int]:
        return list(self.pids)

    async def create(self, name: str | None = None, **body: Any) -> Container:
        body.setdefault("Image", "busybox")
        c, _ = await self.service.create(name, body)
        return c

    async def run(self, name: str | None = None, **body: Any) -> Container:
        c = await self.create(name, **body)
        await self.service.start(c.id)
        return c

    def actions(self, cid: str) -> list[str]:
        sub = self.bus.subscribe(since=0)
        try:
            return [e.action for e in sub.backlog if e.actor_id == cid]
        finally:
            sub.close()

    def attrs(self, cid: str, action: str) -> dict[str, str]:
        sub = self.bus.subscribe(since=0)
        try:
            return dict([e for e in sub.backlog if e.actor_id == cid and e.action == action][-1].attributes)
        finally:
            sub.close()

    def upper(self, c: Container) -> Path:
        return self.snapshotter.upperdir(c.snapshot_key)

    async def close(self) -> None:
        await self.service.shutdown()
        await self.runtime.close()

    def test(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``body`` on a fresh loop and stop every fake container on it, even on failure."""

        async def wrapped() -> None:
            try:
                await body()
            finally:
                await self.close()

        run(wrapped())


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def names(rows: list[Any]) -> list[str]:
    return [r.container.name for r in rows]


# --- list / inspect --------------------------------------------------------------------------------


def test_list_defaults_sizes_and_image(h: Harness) -> None:
    async def go() -> None:
        a = await h.create("aa")
        b = await h.run("bb")
        rows = await h.admin.list_containers({})
        assert names(rows) == ["/bb"]
        rows = await h.admin.list_containers({}, all=True)
        assert names(rows) == ["/bb", "/aa"]
        assert [r.image for r in rows] == ["busybox", "busybox"]
        assert all(r.size is None for r in rows)
        # Config.Image no longer names the container's image: the ID is shown instead.
        h.images.refs["busybox"] = OTHER_ID
        rows = await h.admin.list_containers({}, all=True)
        assert [r.image for r in rows] == [IMAGE_ID, IMAGE_ID]
        (h.upper(a) / "new.txt").write_bytes(b"12345")
        rows = await h.admin.list_containers({"name": ["^aa$"]}, all=True, size=True)
        base = h.layers.size(h.chain)
        assert base > 0
        assert rows[0].size == (5, 5 + base)
        rows = await h.admin.list_containers({"id": [b.id[:8]]}, size=True)
        assert rows[0].size == (0, base)
        with pytest.raises(errdefs.InvalidParameter, match="invalid filter 'nope'"):
            await h.admin.list_containers({"nope": ["1"]})
        with pytest.raises(errdefs.Internal, match="no such container zzz"):
            await h.admin.list_containers({"before": ["zzz"]})

    h.test(go)


def test_list_ancestor(h: Harness) -> None:
    async def go() -> None:
        await h.create("aa")
        assert names(await h.admin.list_containers({"ancestor": ["busybox"]}, all=True)) == ["/aa"]
        assert names(await h.admin.list_containers({"ancestor": [IMAGE_ID]}, all=True)) == ["/aa"]
        assert names(await h.admin.list_containers({"ancestor": ["other"]}, all=True)) == []
        assert names(await h.admin.list_containers({"ancestor": ["missing"]}, all=True)) == []
        # containers of images built on the named one match too
        h.images.children_of[OTHER_ID] = [IMAGE_ID]
        assert names(await h.admin.list_containers({"ancestor": ["other"]}, all=True)) == ["/aa"]

    h.test(go)


def test_inspect(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        h.exec_ids[c.id] = ["e1"]
        found = await h.admin.inspect("aa", size=True)
        assert found.container is c
        assert found.exec_ids == ["e1"]
        assert found.size == (0, h.layers.size(h.chain))
        data = found.graph_driver["Data"]
        assert found.graph_driver["Name"] == "overlay2"
        assert list(data) == ["LowerDir", "MergedDir", "UpperDir", "WorkDir"]
        assert data["UpperDir"] == str(h.upper(c))
        assert data["LowerDir"] == str(h.snapshotter.upperdir(h.chain))
        assert data["MergedDir"] == str(h.tmp / "exec" / "bundles" / c.id / "rootfs")
        assert (await h.admin.inspect(c.id[:6])).size is None
        with pytest.raises(errdefs.NotFound, match="No such container: nope"):
            await h.admin.inspect("nope")

    h.test(go)


# --- rename ----------------------------------------------------------------------------------------


def test_rename(h: Harness) -> None:
    async def go() -> None:
        a = await h.create("aa")
        b = await h.create("bb")
        await h.admin.rename("aa", "a2")
        assert a.name == "/a2"
        assert h.service.get("a2") is a
        with pytest.raises(errdefs.NotFound):
            h.service.get("aa")
        assert h.attrs(a.id, "rename") == {"image": "busybox", "name": "a2", "oldName": "/aa"}
        # written through: a fresh store sees the new name
        assert ContainerStore(h.tmp / "containers").get("a2").id == a.id
        await h.admin.rename(a.id, "/a3")
        assert a.name == "/a3"
        cases: list[tuple[str, str, type[errdefs.EngineError], str]] = [
            (
                "a3",
                "a3",
                errdefs.InvalidParameter,
                "Renaming a container with the same name as its current name",
            ),
            ("a3", "", errdefs.InvalidParameter, "Neither old nor new names may be empty"),
            (
                "a3",
                "bb",
                errdefs.Conflict,
                f'Error when allocating new name: Conflict. The container name "/bb" is already in use by '
                f'container "{b.id}". You have to remove (or rename) that container to be able to reuse '
                "that name.",
            ),
            (
                "a3",
                "-bad",
                errdefs.InvalidParameter,
                "Error when allocating new name: Invalid container name (/-bad), "
                "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            ),
            ("nope", "x", errdefs.NotFound, "No such container: nope"),
        ]
        for ref, new, kind, message in cases:
            with pytest.raises(kind) as err:
                await h.admin.rename(ref, new)
            assert err.value.message == message
        assert a.name == "/a3" and h.service.get("bb") is b

    h.test(go)


# --- pause / unpause -------------------------------------------------------------------------------


def test_pause_unpause(h: Harness) -> None:
    async def go() -> None:
        created = await h.create("idle")
        c = await h.run("busy")
        task = h.runtime.tasks[c.id]
        await h.admin.pause("busy")
        assert task.status == "paused"
        assert (c.state.status, c.state.running, c.state.paused) == ("paused", True, True)
        assert ContainerStore(h.tmp / "containers").get(c.id).state.paused
        rows = await h.admin.list_containers({"status": ["paused"]})
        assert names(rows) == ["/busy"]
        with pytest.raises(errdefs.Conflict) as err:
            await h.admin.pause("busy")
        assert err.value.message == f"Container {c.id} is already paused"
        await h.admin.unpause("busy")
        assert task.status == "running"
        assert (c.state.status, c.state.running, c.state.paused) == ("running", True, False)
        assert h.actions(c.id)[-2:] == ["pause", "unpause"]
        with pytest.raises(errdefs.Internal) as ierr:
            await h.admin.unpause("busy")
        assert ierr.value.message == f"Container {c.id} is not paused"
        with pytest.raises(errdefs.Conflict) as err:
            await h.admin.pause("idle")
        assert err.value.message == f"container {created.id} is not running"
        with pytest.raises(errdefs.Internal):
            await h.admin.unpause("idle")
        with pytest.raises(errdefs.NotFound):
            await h.admin.pause("nope")

    h.test(go)


def test_pause_runtime_failure_keeps_state(h: Harness) -> None:
    async def go() -> None:
        c = await h.run("busy")
        h.runtime.fail_next("pause", errdefs.Internal("freezer broke"))
        with pytest.raises(errdefs.Internal) as err:
            await h.admin.pause("busy")
        assert err.value.message == f"Cannot pause container {c.id}: freezer broke"
        assert not c.state.paused and c.state.status == "running"
        assert "pause" not in h.actions(c.id)

    h.test(go)


# --- update ----------------------------------------------------------------------------------------


def test_update_stopped_is_persisted(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        warnings = await h.admin.update("aa", {"memory": 64 << 20, "MemorySwap": 128 << 20, "CpuShares": 512})
        assert warnings == []
        saved = ContainerStore(h.tmp / "containers").get(c.id).host_config
        assert (saved["Memory"], saved["MemorySwap"], saved["CpuShares"]) == (64 << 20, 128 << 20, 512)
        # dockerd keeps the swap limit when only the memory changes (and it still fits)
        await h.admin.update("aa", {"Memory": 100 << 20})
        assert (c.host_config["Memory"], c.host_config["MemorySwap"]) == (100 << 20, 128 << 20)
        await h.admin.update("aa", {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}})
        assert c.host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        await h.admin.update("aa", {"PidsLimit": -1})
        assert c.host_config["PidsLimit"] == 0
        assert h.actions(c.id).count("update") == 4
        assert not any(call[0] == "update" for call in h.runtime.calls)

    h.test(go)


def test_update_running_applies_live(h: Harness) -> None:
    async def go() -> None:
        c = await h.run("aa", HostConfig={"Memory": 32 << 20})
        task = h.runtime.tasks[c.id]
        await h.admin.update("aa", {"Memory": 48 << 20, "NanoCpus": 500_000_000, "PidsLimit": 64})
        assert task.resources["memory"] == {"limit": 48 << 20, "swap": 64 << 20}
        assert task.resources["cpu"] == {"quota": 50_000, "period": 100_000}
        assert task.resources["pids"] == {"limit": 64}
        assert c.host_config["MemorySwap"] == 64 << 20
        # a runtime failure leaves the stored config as it was
        h.runtime.fail_next("update", errdefs.Internal("runc said no"))
        with pytest.raises(errdefs.Internal) as err:
            await h.admin.update("aa", {"CpuShares": 256})
        assert err.value.message == f"Cannot update container {c.id}: runc said no"
        assert "CpuShares" not in c.host_config or not c.host_config["CpuShares"]
        assert not ContainerStore(h.tmp / "containers").get(c.id).host_config.get("CpuShares")

    h.test(go)


@pytest.mark.parametrize(
    ("host_config", "body", "kind", "message"),
    [
        (
            {},
            {"Memory": 64 << 20},
            errdefs.Conflict,
            "Cannot update container {id}: Memory limit should be smaller than already set memoryswap limit, "
            "update the memoryswap at the same time",
        ),
        ({}, {"Memory": 1000}, errdefs.InvalidParameter, "Minimum memory limit allowed is 6MB"),
        (
            {},
            {"Memory": 64 << 20, "MemorySwap": 1000},
            errdefs.InvalidParameter,
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            {},
            {"NanoCpus": 500_000_000, "CpuQuota": 1000},
            errdefs.InvalidParameter,
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ),
        (
            {"NanoCpus": 500_000_000},
            {"CpuQuota": 50_000},
            errdefs.Conflict,
            "Cannot update container {id}: Conflicting options: CPU Quota cannot be updated as NanoCPUs has "
            "already been set",
        ),
        (
            {},
            {"MemoryReservation": 1000},
            errdefs.InvalidParameter,
            "Minimum memory reservation allowed is 6MB",
        ),
        ({}, {"BlkioWeight": 5}, errdefs.InvalidParameter, "Range of blkio weight is from 10 to 1000"),
        (
            {},
            {"CpuPeriod": 10},
            errdefs.InvalidParameter,
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ),
        (
            {},
            {"CpusetCpus": "0-99999"},
            errdefs.InvalidParameter,
            "Requested CPUs are not available - requested 0-99999, available: {cpus}",
        ),
        (
            {},
            {"CpusetCpus": "abc"},
            errdefs.InvalidParameter,
            "Invalid value abc for cpuset cpus: invalid format: abc",
        ),
        (
            {},
            {"Memory": "abc"},
            errdefs.InvalidParameter,
            "json: cannot unmarshal string into Go struct field UpdateConfig.Memory of type int64",
        ),
        (
            {"AutoRemove": True},
            {"RestartPolicy": {"Name": "always"}},
            errdefs.Conflict,
            "Cannot update container {id}: Restart policy cannot be updated because AutoRemove is enabled "
            "for the container",
        ),
        (
            {},
            {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}},
            errdefs.InvalidParameter,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
    ],
)
def test_update_refusals(
    h: Harness,
    host_config: dict[str, Any],
    body: dict[str, Any],
    kind: type[errdefs.EngineError],
    message: str,
) -> None:
    async def go() -> None:
        c = await h.create("aa", HostConfig=host_config)
        before = dict(c.host_config)
        with pytest.raises(kind) as err:
            await h.admin.update("aa", body)
        cpus = Path("/sys/devices/system/cpu/online").read_text().strip()
        assert err.value.message == message.format(id=c.id, cpus=cpus)
        assert c.host_config == before
        assert "update" not in h.actions(c.id)

    h.test(go)


# --- top -------------------------------------------------------------------------------------------


def test_top_runs_ps_on_the_container_pids(h: Harness) -> None:
    async def go() -> None:
        c = await h.run("aa")
        result = await h.admin.top("aa")
        assert result["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        processes = cast(list[list[str]], result["Processes"])
        assert [p[1] for p in processes] == [str(os.getpid())]
        result = await h.admin.top("aa", "-o pid,comm")
        assert result["Titles"] == ["PID", "COMMAND"]
        assert cast(list[list[str]], result["Processes"])[0][0] == str(os.getpid())
        # "aux" can not be combined with -q: ps runs again without it and lines are filtered
        result = await h.admin.top("aa", "aux")
        assert [p[1] for p in cast(list[list[str]], result["Processes"])] == [str(os.getpid())]
        assert h.actions(c.id).count("top") == 3
        h.pids = [2**22 + 7]  # no such process
        assert (await h.admin.top("aa"))["Processes"] is None
        for args, message in [
            ("-o comm", "Couldn't find PID field in ps output"),
            ("-o pid -o user=PID", 'specifying "user=PID" is not allowed'),
            ("--bogus", "ps: error: unknown gnu long option"),
        ]:
            with pytest.raises(errdefs.Internal) as ierr:
                await h.admin.top("aa", args)
            assert ierr.value.message == message
        idle = await h.create("idle")
        with pytest.raises(errdefs.Conflict) as err:
            await h.admin.top("idle")
        assert err.value.message == f"container {idle.id} is not running"

    h.test(go)


# --- prune -----------------------------------------------------------------------------------------


def test_prune(h: Harness) -> None:
    async def go() -> None:
        keep = await h.create("keep", Labels={"keep": "yes"})
        drop1 = await h.create("drop1", Labels={"tier": "x"})
        drop2 = await h.create("drop2")
        running = await h.run("running")
        (h.upper(drop1) / "junk").write_bytes(b"x" * 100)
        report = await h.admin.prune({"label": ["nothing-has-this"]})
        assert report == {"ContainersDeleted": None, "SpaceReclaimed": 0}
        report = await h.admin.prune({"label!": ["keep"]})
        assert sorted(cast(list[str], report["ContainersDeleted"])) == sorted([drop1.id, drop2.id])
        assert report["SpaceReclaimed"] == 100
        assert {c.id for c in h.service.store} == {keep.id, running.id}
        sub = h.bus.subscribe(since=0)
        prunes = [e for e in sub.backlog if e.action == "prune"]
        sub.close()
        assert [(e.type, e.actor_id, dict(e.attributes)) for e in prunes] == [
            ("container", "", {"reclaimed": "0"}),
            ("container", "", {"reclaimed": "100"}),
        ]
        # until: only containers created before the time
        report = await h.admin.prune({"until": ["2000-01-01T00:00:00Z"]})
        assert report["ContainersDeleted"] is None
        with pytest.raises(errdefs.InvalidParameter, match="invalid filter 'status'"):
            await h.admin.prune({"status": ["exited"]})
        with pytest.raises(errdefs.Internal, match="more than one until filter specified"):
            await h.admin.prune({"until": ["1h", "2h"]})
        report = await h.admin.prune({"until": ["-1h"]})  # an hour from now
        assert report["ContainersDeleted"] == [keep.id]

    h.test(go)


def test_prune_one_at_a_time(h: Harness) -> None:
    async def go() -> None:
        h.admin._prune_running = True
        with pytest.raises(errdefs.Conflict, match="a prune operation is already running"):
            await h.admin.prune({})

    h.test(go)


# --- changes ---------------------------------------------------------------------------------------


def test_changes_add_modify(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        assert await h.admin.changes("aa") is None
        upper = h.upper(c)
        (upper / "etc").mkdir(exist_ok=True)  # made at create for the init entries
        (upper / "etc" / "passwd").write_bytes(b"changed\n")
        (upper / "newdir" / "sub").mkdir(parents=True)
        (upper / "newdir" / "sub" / "f").write_bytes(b"f")
        # what runc leaves for its bind mounts is not a change (dockerd keeps them in its init layer)
        (upper / "etc" / "hostname").write_bytes(b"")
        (upper / "proc").mkdir(exist_ok=True)
        (upper / "tmp").mkdir()
        (upper / "tmp" / "x").write_bytes(b"x")
        assert await h.admin.changes("aa") == [
            {"Path": "/etc", "Kind": 0},
            {"Path": "/etc/passwd", "Kind": 0},
            {"Path": "/newdir", "Kind": 1},
            {"Path": "/newdir/sub", "Kind": 1},
            {"Path": "/newdir/sub/f", "Kind": 1},
            {"Path": "/tmp", "Kind": 1},
            {"Path": "/tmp/x", "Kind": 1},
        ]
        with pytest.raises(errdefs.NotFound):
            await h.admin.changes("nope")

    h.test(go)


def test_changes_skip_a_dir_holding_only_mount_points(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        upper = h.upper(c)
        (upper / "etc").mkdir(exist_ok=True)
        for name in ("hostname", "hosts", "resolv.conf"):
            (upper / "etc" / name).write_bytes(b"")
        assert await h.admin.changes("aa") is None
        (upper / "etc" / "motd").write_bytes(b"hi")
        assert await h.admin.changes("aa") == [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/motd", "Kind": 1}]

    h.test(go)


@pytest.mark.privileged
@root_only
def test_changes_whiteouts_and_opaque_dirs(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        upper = h.upper(c)
        (upper / "bin").mkdir()
        os.mknod(upper / "bin" / "sh", stat.S_IFCHR | 0o600, os.makedev(0, 0))
        os.mknod(upper / "home", stat.S_IFCHR | 0o600, os.makedev(0, 0))
        (upper / "data").mkdir()
        os.setxattr(upper / "data", "trusted.overlay.opaque", b"y")
        (upper / "data" / "fresh").write_bytes(b"new")
        assert await h.admin.changes("aa") == [
            {"Path": "/bin", "Kind": 0},
            {"Path": "/bin/sh", "Kind": 2},
            {"Path": "/data", "Kind": 2},
            {"Path": "/data/fresh", "Kind": 1},
            {"Path": "/home", "Kind": 2},
        ]

    h.test(go)


# --- export ----------------------------------------------------------------------------------------


async def _collect(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


@pytest.mark.privileged
@root_only
def test_export_stopped_container(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        upper = h.upper(c)
        os.mknod(upper / "home", stat.S_IFCHR | 0o600, os.makedev(0, 0))
        (upper / "added.txt").write_bytes(b"added\n")
        (upper / "data").mkdir()
        (upper / "data" / "keep").write_bytes(b"changed\n")
        data = await _collect(await h.admin.export("aa"))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            init = {".dockerenv", "dev", "dev/console", "dev/pts", "dev/shm", "proc", "sys"}
            init |= {"etc/hostname", "etc/hosts", "etc/mtab", "etc/resolv.conf"}
            changed = {"added.txt", "bin", "bin/sh", "data", "data/keep", "etc", "etc/passwd"}
            assert set(members) == changed | init
            assert members["etc/mtab"].issym() and members["etc/mtab"].linkname == "/proc/mounts"
            assert members[".dockerenv"].isfile() and members[".dockerenv"].mode == 0o755
            assert tar.extractfile("data/keep").read() == b"changed\n"  # type: ignore[union-attr]
            assert tar.extractfile("bin/sh").read() == BASE_FILES["bin/sh"]  # type: ignore[union-attr]
        scratch = h.tmp / "exec" / "export"
        assert not any(scratch.iterdir())
        assert h.actions(c.id)[-1] == "export"
        with pytest.raises(errdefs.NotFound):
            await h.admin.export("nope")

    h.test(go)


@pytest.mark.privileged
@root_only
def test_export_abandoned_stream_unmounts(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        (h.upper(c) / "big").write_bytes(os.urandom(4 << 20))
        stream = await h.admin.export("aa")
        first = await anext(stream)
        assert first
        await stream.aclose()  # type: ignore[attr-defined]
        scratch = h.tmp / "exec" / "export"
        for _ in range(100):
            leftovers = list(scratch.iterdir())
            if not leftovers:
                break
            await asyncio.sleep(0.05)
        assert not leftovers
        assert "export" not in h.actions(c.id)

    h.test(go)


def test_export_refuses_removing_container(h: Harness) -> None:
    async def go() -> None:
        c = await h.create("aa")
        c.state.status = "removing"
        with pytest.raises(errdefs.Conflict) as err:
            await h.admin.export("aa")
        assert err.value.message == f"You cannot export container {c.id} which is being removed"
        c.state.status, c.state.dead = "dead", True
        with pytest.raises(errdefs.Conflict) as err:
            await h.admin.export("aa")
        assert err.value.message == f"You cannot export container {c.id} which is Dead"
        assert not is_mounted(h.tmp)

    h.test(go)


# --- pure helpers ----------------------------------------------------------------------------------


def test_parse_ps_output_threads_and_long_commands() -> None:
    output = (
        b"USER PID TID CMD\n"
        b"root 10 - sh -c sleep 1\n"
        b"-    -   10 -\n"
        b"-    -   11 -\n"
        b"root 20 - other\n"
        b"-    -   20 -\n"
    )
    result = top.parse_ps_output(output, [10])
    assert result == {
        "Processes": [["root", "10", "-", "sh -c sleep 1"], ["-", "-", "10", "-"], ["-", "-", "11", "-"]],
        "Titles": ["USER", "PID", "TID", "CMD"],
    }
    with pytest.raises(errdefs.Internal) as err:
        top.parse_ps_output(b"PID CMD\nabc x\n", [1])
    assert err.value.message == "Unexpected pid 'abc': strconv.Atoi: parsing \"abc\": invalid syntax"


def test_live_resources_and_swap_bookkeeping() -> None:
    hc: dict[str, Any] = {"Memory": 64 << 20}
    update.merge(hc, {"Memory": 100 << 20})
    assert hc["MemorySwap"] == 128 << 20  # create's 2x, kept
    update.merge(hc, {"MemorySwap": -1})
    assert update.live_resources(hc) == {"memory": {"limit": 100 << 20}}
    update.merge(hc, {"CpusetCpus": "0", "BlkioWeight": 300, "PidsLimit": 0})
    assert update.live_resources(hc) == {
        "memory": {"limit": 100 << 20},
        "cpu": {"cpus": "0"},
        "pids": {"limit": -1},
        "blockIO": {"weight": 300},
    }


def test_readonly_view() -> None:
    from engine.containers.fsdiff import readonly_view

    assert readonly_view(Path("/u"), []) == [Mount("bind", "/u", ("ro", "rbind"))]
    assert readonly_view(Path("/u"), [Path("/l1"), Path("/l2")]) == [
        Mount("overlay", "overlay", ("lowerdir=/u:/l1:/l2",))
    ]
