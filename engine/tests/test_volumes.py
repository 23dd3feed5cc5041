"""VolumeService on a temp VolumeStore, and container mounts on the FakeRuntime (no root needed).

Texts are the reference dockerd's; the anonymous-volume label and prune's anonymous-only default
follow dockerd 23+ (API 1.42+).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers.model import Container
from engine.containers.service import ContainerService
from engine.containers.store import ContainerStore
from engine.events import EventBus
from engine.volumes.service import ANONYMOUS_LABEL, VolumeService, go_rfc3339
from runtime.fake import FakeContext, FakeRuntime
from storage.volumes import VolumeStore

IMAGE_ID = "sha256:" + "b" * 64


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def events(bus: EventBus, kind: str = "volume") -> list[tuple[str, str, dict[str, str]]]:
    sub = bus.subscribe(since=0)
    try:
        return [(e.action, e.actor_id, e.attributes) for e in sub.backlog if e.type == kind]
    finally:
        sub.close()


def service(tmp: Path, users: dict[str, list[str]] | None = None) -> tuple[VolumeService, EventBus]:
    bus = EventBus()
    svc = VolumeService(VolumeStore(tmp / "volumes"), bus)
    if users is not None:
        svc.set_usage_checker(lambda name: users.get(name, []))
    return svc, bus


# -- VolumeService ---------------------------------------------------------------------


def test_create_named_returns_existing_and_logs_create_each_time(tmp_path: Path) -> None:
    async def body() -> None:
        svc, bus = service(tmp_path)
        first = await svc.create("data", labels={"a": "b"}, options=None)
        again = await svc.create("data", labels={"other": "x"})
        assert again == first
        assert first["Name"] == "data" and first["Driver"] == "local" and first["Scope"] == "local"
        assert first["Labels"] == {"a": "b"} and first["Options"] is None
        assert first["Mountpoint"] == str(tmp_path / "volumes" / "data" / "_data")
        assert list(first) == ["CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"]
        assert events(bus) == [("create", "data", {"driver": "local"})] * 2
        assert await svc.inspect("data") == first

    run(body())


def test_anonymous_volumes_get_a_generated_name_and_the_label(tmp_path: Path) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path)
        vol = await svc.create(None, labels={"mine": "1"})
        assert len(vol["Name"]) == 64 and int(vol["Name"], 16) >= 0
        assert vol["Labels"] == {"mine": "1", ANONYMOUS_LABEL: ""}

    run(body())


@pytest.mark.parametrize(
    ("kwargs", "kind", "message"),
    [
        ({"name": "a"}, errdefs.InvalidParameter,
         "create a: volume name is too short, names should be at least two alphanumeric characters"),
        ({"name": "a/b"}, errdefs.InvalidParameter,
         'create a/b: "a/b" includes invalid characters for a local volume name, only '
         '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. '
         "If you intended to pass a host directory, use absolute path"),
        ({"name": "vv", "options": {"foo": "x"}}, errdefs.InvalidParameter,
         'create vv: invalid option: "foo"'),
        ({"name": "vv", "options": {"type": "tmpfs"}}, errdefs.InvalidParameter,
         'create vv: missing required option: "device"'),
        ({"name": "vv", "options": {"device": "/x"}}, errdefs.InvalidParameter,
         'create vv: missing required option: "type"'),
        ({"name": "vv", "options": {"size": "1m"}}, errdefs.InvalidParameter,
         "create vv: quota size requested but no quota support"),
        ({"name": "vv", "driver": "foo"}, errdefs.NotFound,
         'create vv: error looking up volume plugin foo: plugin "foo" not found'),
    ],
)  # fmt: skip
def test_create_errors(tmp_path: Path, kwargs: dict[str, Any], kind: type[Exception], message: str) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path)
        name = kwargs.pop("name")
        with pytest.raises(kind) as info:
            await svc.create(name, **kwargs)
        assert cast(errdefs.EngineError, info.value).message == message
        assert svc.store.list() == []

    run(body())


def test_inspect_and_remove_of_a_missing_volume(tmp_path: Path) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path)
        with pytest.raises(errdefs.NotFound, match=r"^get nope: no such volume$"):
            await svc.inspect("nope")
        with pytest.raises(errdefs.NotFound, match=r"^get nope: no such volume$"):
            await svc.remove("nope")
        await svc.remove("nope", force=True)

    run(body())


def test_list_filters(tmp_path: Path) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path, users={"web-data": ["c1"]})
        await svc.create("web-data", labels={"app": "web", "tier": "db"})
        await svc.create("cache", labels={"app": "cache"})
        anon = (await svc.create(None))["Name"]

        async def names(**filters: list[str]) -> list[str]:
            return [v["Name"] for v in await svc.list(filters)]

        assert await names() == sorted(["web-data", "cache", anon])
        assert await names(name=["web"]) == ["web-data"]
        assert await names(name=["^ca"]) == ["cache"]
        assert await names(label=["app"]) == ["cache", "web-data"]
        assert await names(label=["app=web", "tier=db"]) == ["web-data"]
        assert await names(label=[ANONYMOUS_LABEL]) == [anon]
        assert await names(dangling=["true"]) == sorted(["cache", anon])
        assert await names(dangling=["0"]) == ["web-data"]
        assert await names(driver=["local"]) == sorted(["web-data", "cache", anon])
        assert await names(driver=["nfs"]) == []
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'foo'$"):
            await svc.list({"foo": ["x"]})
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'dangling=\[x\]'$"):
            await svc.list({"dangling": ["x"]})

    run(body())


def test_remove_refuses_a_volume_in_use_even_with_force(tmp_path: Path) -> None:
    async def body() -> None:
        users = {"busy": ["c2", "c1"]}
        svc, bus = service(tmp_path, users=users)
        await svc.create("busy")
        await svc.create("pending", reference="c9")  # a container still being created
        for force in (False, True):
            with pytest.raises(errdefs.Conflict) as info:
                await svc.remove("busy", force=force)
            assert info.value.message == "remove busy: volume is in use - [c1, c2]"
        with pytest.raises(errdefs.Conflict, match=r"in use - \[c9\]"):
            await svc.remove("pending")
        svc.release("pending", "c9")
        await svc.remove("pending")
        users["busy"] = []
        await svc.remove("busy")
        assert svc.store.list() == []
        assert [a for a, _, _ in events(bus)] == ["create", "create", "destroy", "destroy"]

    run(body())


def test_prune_removes_unused_anonymous_volumes_unless_all(tmp_path: Path) -> None:
    async def body() -> None:
        users: dict[str, list[str]] = {}
        svc, bus = service(tmp_path, users=users)
        named = (await svc.create("named"))["Name"]
        anon = (await svc.create(None))["Name"]
        used = (await svc.create(None))["Name"]
        users[used] = ["c1"]
        await svc.create("mounted", options={"type": "tmpfs", "device": "tmpfs"})
        (svc.data_path(anon) / "f").write_bytes(b"x" * 10)

        report = await svc.prune({})
        assert report == {"VolumesDeleted": [anon], "SpaceReclaimed": 10}
        assert events(bus)[-1] == ("prune", "", {"reclaimed": "10"})
        assert await svc.prune({}) == {"VolumesDeleted": [], "SpaceReclaimed": 0}
        # all=true: named ones too, but never one in use nor one with mount options
        assert await svc.prune({"all": ["true"], "label!": ["keep"]}) == {
            "VolumesDeleted": [named],
            "SpaceReclaimed": 0,
        }
        assert sorted(v.name for v in svc.store.list()) == sorted(["mounted", used])

    run(body())


def test_prune_label_filters_and_bad_all(tmp_path: Path) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path)
        await svc.create("keep-me", labels={"keep": "yes"})
        await svc.create("drop-me", labels={"env": "test"})
        await svc.create("other")
        assert (await svc.prune({"all": ["1"], "label": ["env=test"]}))["VolumesDeleted"] == ["drop-me"]
        assert (await svc.prune({"all": ["true"], "label!": ["keep"]}))["VolumesDeleted"] == ["other"]
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'all': strconv.ParseBool"):
            await svc.prune({"all": ["maybe"]})
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'all=\[1 0\]'"):
            await svc.prune({"all": ["1", "0"]})
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid filter 'dangling'$"):
            await svc.prune({"dangling": ["true"]})

    run(body())


def test_usage_and_plain_mounts(tmp_path: Path) -> None:
    async def body() -> None:
        svc, _ = service(tmp_path, users={"uu": ["c1", "c2"]})
        await svc.create("uu")
        await svc.create("opt", options={"type": "none", "o": "bind", "device": str(tmp_path)})
        (svc.data_path("uu") / "f").write_bytes(b"12345")
        assert await svc.usage("uu") == (5, 2)
        assert await svc.usage("opt") == (-1, 0)
        # no driver options: the data directory itself, nothing mounted
        assert await svc.mount("uu", "c1:/d") == svc.data_path("uu")
        await svc.unmount("uu", "c1:/d")

    run(body())


def test_created_at_is_gos_rfc3339() -> None:
    text = go_rfc3339(1_700_000_000_123_456_789)
    assert len(text) in (20, 25) and text[10] == "T" and "." not in text


# -- containers with mounts (FakeRuntime) ----------------------------------------------


async def _stubborn(ctx: FakeContext) -> int:
    ctx.trap(signal.SIGTERM)
    await ctx.sleep(300)
    return 0


class FakeImages:
    def __init__(self, volumes: dict[str, Any] | None = None) -> None:
        self.volumes = volumes

    async def resolve(self, ref: str) -> Any:
        return SimpleNamespace(id=IMAGE_ID)

    def image_config(self, image: Any) -> dict[str, Any]:
        return {"Cmd": ["stubborn"], "Volumes": dict(self.volumes) if self.volumes else None}

    def top_chain_id(self, image: Any) -> str | None:
        return None


class FakeLayers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.snapshotter = SimpleNamespace(
            mounts=lambda key: [], upperdir=self._upper, lowerdirs=lambda key: []
        )

    def _upper(self, key: str) -> Path:
        path = self.tmp / "upper" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare_rw(self, key: str, parent: str | None) -> list[Any]:
        return []

    def remove_rw(self, key: str) -> None:
        pass


class Harness:
    def __init__(self, tmp: Path, image_volumes: dict[str, Any] | None = None) -> None:
        self.tmp = tmp
        self.bus = EventBus()
        self.volumes = VolumeService(VolumeStore(tmp / "volumes"), self.bus)
        self.service = ContainerService(
            store=ContainerStore(tmp / "containers"),
            images=cast(Any, FakeImages(image_volumes)),
            layers=cast(Any, FakeLayers(tmp)),
            runtime=FakeRuntime({"stubborn": _stubborn}),
            events=self.bus,
            exec_root=tmp / "exec",
            volumes=self.volumes,
        )
        self.volumes.set_usage_checker(self.service.mounts.volume_users)

    async def create(self, name: str | None = None, **host_config: Any) -> Container:
        body: dict[str, Any] = {"Image": "busybox", "HostConfig": host_config}
        if "Volumes" in host_config:
            body["Volumes"] = host_config.pop("Volumes")
        c, _ = await self.service.create(name, body)
        return c

    def names(self) -> list[str]:
        return sorted(v.name for v in self.volumes.store.list())


def with_harness(tmp: Path, body: Any, image_volumes: dict[str, Any] | None = None) -> None:
    async def main() -> None:
        h = Harness(tmp, image_volumes)
        try:
            await body(h)
        finally:
            await h.service.shutdown()

    run(main())


def test_create_registers_mount_points_and_volumes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        c = await h.create(
            "c1",
            Binds=["data:/data:ro", f"{tmp_path}/host:/host", "/anon-bind"],
            Mounts=[
                {"Type": "volume", "Target": "/m-anon"},
                {
                    "Type": "volume",
                    "Source": "labelled",
                    "Target": "/m",
                    "VolumeOptions": {"Labels": {"x": "y"}},
                },
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1 << 20}},
            ],
            Volumes={"/config-vol": {}, "/data": {}},
        )
        by_dest = {m["Destination"]: m for m in c.mount_points}
        assert set(by_dest) == {
            "/data",
            "/host",
            "/anon-bind",
            "/m-anon",
            "/m",
            "/t",
            "/config-vol",
            "/var/img",
        }
        docker_keys = ("Type", "Name", "Source", "Destination", "Driver", "Mode", "RW", "Propagation")
        assert {k: by_dest["/data"][k] for k in docker_keys} == {
            "Type": "volume", "Name": "data", "Source": str(h.volumes.data_path("data")),
            "Destination": "/data", "Driver": "local", "Mode": "ro", "RW": False, "Propagation": "",
        }  # fmt: skip
        assert by_dest["/host"]["Type"] == "bind" and by_dest["/host"]["Propagation"] == "rprivate"
        assert "Name" not in by_dest["/host"] and "Driver" not in by_dest["/host"]
        assert by_dest["/m-anon"]["Mode"] == "z" and by_dest["/config-vol"]["Mode"] == ""
        assert by_dest["/var/img"]["Mode"] == "" and by_dest["/var/img"]["RW"] is True
        assert by_dest["/t"]["Type"] == "tmpfs" and by_dest["/t"]["Source"] == ""
        labelled = await h.volumes.inspect("labelled")
        assert labelled["Labels"] == {"x": "y"}
        anonymous = [m["Name"] for m in c.mount_points if m.get("Name") not in (None, "data", "labelled")]
        assert len(anonymous) == 4
        for name in anonymous:
            assert (await h.volumes.inspect(name))["Labels"] == {ANONYMOUS_LABEL: ""}
            assert h.volumes.users(name) == [c.id]
        assert not (tmp_path / "host").exists()  # -v host paths are made at start, as dockerd does
        on_disk = json.loads((tmp_path / "containers" / c.id / "config.v2.json").read_text())
        assert on_disk["mount_points"] == c.mount_points

        # rm keeps every volume; a second container's rm -v removes only its anonymous ones
        await h.service.remove(c.id)
        assert h.names() == sorted(["data", "labelled", *anonymous])
        c2 = await h.create("c2", Binds=["data:/data", "/anon"])
        await h.service.remove(c2.id, volumes=True)
        assert h.names() == sorted(["data", "labelled", *anonymous])

    with_harness(tmp_path, body, image_volumes={"/var/img": {}})


def test_duplicate_and_invalid_mounts_leave_nothing_behind(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"Binds": ["/anon", "/tmp:/anon"]}, errdefs.InvalidParameter, "Duplicate mount point: /anon"),
            (
                {"Binds": ["/tmp:/a"], "Tmpfs": {"/a": ""}},
                errdefs.InvalidParameter,
                "Duplicate mount point: /a",
            ),
            (
                {"Binds": ["v1:/a"], "Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/a"}]},
                errdefs.InvalidParameter,
                "Duplicate mount point: /a",
            ),
            ({"Binds": ["/tmp:/a:xx"]}, errdefs.Internal, "invalid mode: xx"),
            (
                {"Mounts": [{"Type": "bind", "Source": str(tmp_path / "nope"), "Target": "/a"}]},
                errdefs.InvalidParameter,
                f'invalid mount config for type "bind": bind source path does not exist: {tmp_path / "nope"}',
            ),
            ({"VolumesFrom": ["ghost"]}, errdefs.InvalidParameter, "No such container: ghost"),
            ({"Binds": ["x:/a"]}, errdefs.InvalidParameter, "create x: volume name is too short"),
        ]
        for host_config, kind, message in cases:
            with pytest.raises(kind) as info:
                await h.create("bad", **host_config)
            assert cast(errdefs.EngineError, info.value).message.startswith(message)
        # named volumes made on the way stay (as with dockerd); anonymous ones are gone
        assert h.names() == ["v1"]
        assert h.volumes.users("v1") == []
        assert list(h.service.store) == []

    with_harness(tmp_path, body)


def test_volumes_from_copies_mount_points(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        src = await h.create("src", Binds=["shared:/shared", "/anon", f"{tmp_path}:/host:ro"])
        consumer = await h.create("consumer", VolumesFrom=["src:ro"])
        mine = {m["Destination"]: m for m in consumer.mount_points}
        assert set(mine) == {"/shared", "/anon", "/host"}
        assert all(m["RW"] is False for m in mine.values())
        assert mine["/shared"]["Mode"] == "" and mine["/shared"]["Name"] == "shared"
        anon = mine["/anon"]["Name"]
        assert h.volumes.users(anon) == sorted([src.id, consumer.id])
        with pytest.raises(errdefs.InvalidParameter, match=r"^invalid mode: rshared$"):
            await h.create("xx", VolumesFrom=["src:rshared"])
        # rm -v of the source keeps the anonymous volume the consumer still uses
        await h.service.remove(src.id, volumes=True)
        assert anon in h.names()
        await h.service.remove(consumer.id, volumes=True)
        assert h.names() == ["shared"]

    with_harness(tmp_path, body)


def test_start_mounts_volumes_binds_and_tmpfs_and_logs_events(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        host_dir = tmp_path / "made-at-start"
        c = await h.create(
            "runner",
            Binds=["vol:/data:ro", f"{host_dir}:/host"],
            Mounts=[
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 2 << 20, "Mode": 0o1777}}
            ],
        )
        await h.service.start(c.id)
        assert host_dir.is_dir()
        spec = json.loads((tmp_path / "exec" / "bundles" / c.id / "config.json").read_text())
        mounts = {m["destination"]: m for m in spec["mounts"]}
        assert mounts["/data"] == {
            "destination": "/data", "type": "bind", "source": str(h.volumes.data_path("vol")),
            "options": ["rbind", "ro"],
        }  # fmt: skip
        assert mounts["/host"]["options"] == ["rbind", "rprivate"]
        assert mounts["/t"]["type"] == "tmpfs"
        assert mounts["/t"]["options"] == ["noexec", "nosuid", "nodev", "rprivate", "mode=1777", "size=2m"]
        assert "/etc/hosts" in mounts  # the network files are still there
        with pytest.raises(errdefs.Conflict, match=r"^remove vol: volume is in use"):
            await h.volumes.remove("vol")
        await h.service.stop(c.id, timeout=0)
        got = [(a, n, attrs) for a, n, attrs in events(h.bus) if a in ("mount", "unmount")]
        assert got == [
            ("mount", "vol", {
                "driver": "local", "container": c.id, "destination": "/data", "propagation": "",
                "read/write": "false",
            }),
            ("unmount", "vol", {"driver": "local", "container": c.id}),
        ]  # fmt: skip
        await h.service.remove(c.id, volumes=True)
        assert h.names() == ["vol"]

    with_harness(tmp_path, body)
