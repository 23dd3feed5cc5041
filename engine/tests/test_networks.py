"""NetworkService over FakeDrivers and an in-memory IPAM: records, pools, texts and unwinding."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import errdefs
from engine.events import EventBus
from engine.networks.service import NetworkService
from engine.networks.store import NetworkStore
from network.fake import FakeDriver
from network.ipam import Ipam

T = TypeVar("T")
PREDEFINED = {"bridge": "b" * 64, "host": "c" * 64, "none": "d" * 64}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


@dataclass
class Rig:
    root: Path
    bridge: FakeDriver = field(default_factory=FakeDriver)
    events: EventBus = field(default_factory=EventBus)
    host_nets: list[IPv4Network] = field(default_factory=list)

    def service(self) -> NetworkService:
        drivers = {"bridge": self.bridge, "host": FakeDriver("host"), "null": FakeDriver("null")}
        ipam = Ipam(host_networks=lambda: self.host_nets)
        return NetworkService(NetworkStore(self.root), drivers, ipam, self.events, predefined_ids=PREDEFINED)

    def actions(self) -> list[tuple[str, str]]:
        return [(e.action, e.attributes.get("name", "")) for e in self.events._ring if e.type == "network"]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "networks", host_nets=[IPv4Network("172.17.0.0/16")])


async def started(rig: Rig) -> NetworkService:
    svc = rig.service()
    await svc.start()
    return svc


def test_predefined_networks_and_lazy_default_bridge(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        assert svc.ipam.pools() == []  # the default bridge's subnet is chosen on first use
        names = {n["Name"]: n for n in await svc.list()}
        assert set(names) == {"bridge", "host", "none"}
        assert names["bridge"]["Id"] == PREDEFINED["bridge"]
        assert names["none"]["Driver"] == "null"
        # 172.17/16 is taken on the host: the default bridge gets the next default pool.
        assert names["bridge"]["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
        assert names["bridge"]["Options"]["com.docker.network.bridge.name"] == "skiff0"
        assert PREDEFINED["bridge"] not in rig.bridge.networks  # no kernel bridge before an endpoint
        ep = await svc.create_endpoint("bridge", "e" * 64, "/web")
        assert PREDEFINED["bridge"] in rig.bridge.networks
        assert str(ep.info.address) == "172.18.0.2/16"
        view = (await svc.inspect("bridge"))["Containers"]
        assert view["e" * 64]["Name"] == "web" and view["e" * 64]["IPv4Address"] == "172.18.0.2/16"
        await svc.delete_endpoint("bridge", ep.info.endpoint_id)
        assert (await svc.inspect("bridge"))["Containers"] == {}

    run(body())


def test_create_inspect_and_lookup(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        res = await svc.create(
            "front",
            internal=True,
            attachable=True,
            labels={"a": "b"},
            options={"com.docker.network.bridge.name": "frontbr"},
            ipam_config=[{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254", "IPRange": "10.9.0.128/25"}],
        )
        assert res["Warning"] == "" and len(res["Id"]) == 64
        nid = res["Id"]
        view = await svc.inspect("front")
        assert view["Id"] == nid and (await svc.inspect(nid[:5]))["Name"] == "front"
        assert view["IPAM"] == {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": "10.9.0.0/24", "IPRange": "10.9.0.128/25", "Gateway": "10.9.0.254"}],
        }
        assert view["Internal"] and view["Attachable"] and view["Labels"] == {"a": "b"}
        assert view["Scope"] == "local" and view["EnableIPv4"] and view["Containers"] == {}
        spec = rig.bridge.networks[nid]
        assert spec.internal and str(spec.gateway) == "10.9.0.254/24"
        with pytest.raises(errdefs.Conflict, match=r"^network with name front already exists$"):
            await svc.create("front")
        with pytest.raises(errdefs.NotFound, match=r"^network nope not found$"):
            await svc.inspect("nope")
        with pytest.raises(errdefs.Forbidden, match="Pool overlaps"):
            await svc.create("other", ipam_config=[{"Subnet": "10.9.0.0/16"}])
        assert [n["Name"] for n in await svc.list()].count("other") == 0
        assert ("create", "front") in rig.actions()

    run(body())


def test_unsupported_drivers(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        with pytest.raises(errdefs.Forbidden, match='only one instance of "host" network is allowed'):
            await svc.create("h", "host")
        with pytest.raises(errdefs.NotFound, match="could not find plugin foo"):
            await svc.create("f", "foo")
        with pytest.raises(errdefs.Unavailable, match="not a swarm manager"):
            await svc.create("o", "overlay")
        assert len(await svc.list()) == 3

    run(body())


def test_create_unwinds_when_the_driver_fails(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        rig.bridge.fail_next("create_network", errdefs.Internal("boom"))
        with pytest.raises(errdefs.Internal, match="boom"):
            await svc.create("x", ipam_config=[{"Subnet": "10.5.0.0/24"}])
        assert not any(n["Name"] == "x" for n in await svc.list())
        assert len(list(rig.root.glob("*.json"))) == 3  # the pre-defined records only
        await svc.create("x", ipam_config=[{"Subnet": "10.5.0.0/24"}])  # the pool was released

    run(body())


def test_remove_texts_and_cleanup(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        nid = (await svc.create("back"))["Id"]
        with pytest.raises(
            errdefs.Forbidden, match=r"^bridge is a pre-defined network and cannot be removed$"
        ):
            await svc.remove("bridge")
        ep = await svc.create_endpoint("back", "f" * 64, "db")
        with pytest.raises(
            errdefs.Forbidden,
            match=r"^error while removing network: network back has active endpoints \(db\)$",
        ):
            await svc.remove("back")
        await svc.delete_endpoint("back", ep.info.endpoint_id)
        await svc.remove(nid[:12])
        assert nid not in rig.bridge.networks
        assert not (rig.root / f"{nid}.json").exists()
        assert ("destroy", "back") in rig.actions()
        with pytest.raises(errdefs.NotFound):
            await svc.remove("back")

    run(body())


def test_list_filters(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        a = (await svc.create("proj_default", labels={"p": "x"}))["Id"]
        await svc.create("other", labels={"p": "y"})
        await svc.create_endpoint("other", "1" * 64, "c")

        async def names(**f: list[str]) -> list[str]:
            return sorted(n["Name"] for n in await svc.list(f))

        assert await names(name=["proj"]) == ["proj_default"]
        assert await names(id=[a[:6]]) == ["proj_default"]
        assert await names(label=["p=x"]) == ["proj_default"] and await names(label=["p"]) == [
            "other",
            "proj_default",
        ]
        assert await names(type=["builtin"]) == ["bridge", "host", "none"]
        assert await names(type=["custom"]) == ["other", "proj_default"]
        assert await names(driver=["null"]) == ["none"]
        assert await names(dangling=["true"]) == ["proj_default"]
        assert "other" in await names(dangling=["false"])
        with pytest.raises(errdefs.InvalidParameter, match="invalid filter 'foo'"):
            await svc.list({"foo": ["1"]})
        with pytest.raises(errdefs.InvalidParameter, match="'type'='bad'"):
            await svc.list({"type": ["bad"]})
        assert (await svc.list({"name": ["other"]}))[0]["Containers"] == {}  # list never shows endpoints

    run(body())


def test_prune(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        await svc.create("keep", labels={"k": "1"})
        await svc.create("gone")
        await svc.create("busy")
        await svc.create_endpoint("busy", "2" * 64, "c")
        assert await svc.prune({"label!": ["k"]}) == {"NetworksDeleted": ["gone"]}
        assert await svc.prune({"until": ["1"]}) == {"NetworksDeleted": None}
        assert await svc.prune() == {"NetworksDeleted": ["keep"]}
        assert sorted(n["Name"] for n in await svc.list()) == ["bridge", "busy", "host", "none"]

    run(body())


def test_restart_restores_records_and_pools(rig: Rig) -> None:
    async def body() -> None:
        svc = await started(rig)
        nid = (await svc.create("persist", labels={"a": "1"}))["Id"]
        subnet = (await svc.inspect("persist"))["IPAM"]["Config"][0]["Subnet"]
        bridge_subnet = (await svc.inspect("bridge"))["IPAM"]["Config"][0]["Subnet"]
        await svc.shutdown()
        assert rig.bridge.calls[-1] == ("close", "") and rig.bridge.networks == {}

        again = Rig(rig.root, host_nets=rig.host_nets)
        svc2 = await started(again)
        view = await svc2.inspect(nid)
        assert view["Name"] == "persist" and view["Labels"] == {"a": "1"}
        assert view["IPAM"]["Config"][0]["Subnet"] == subnet
        assert (await svc2.inspect("bridge"))["IPAM"]["Config"][0]["Subnet"] == bridge_subnet
        assert nid in again.bridge.networks  # the user bridge is made again at start
        # The restored pools are taken: a new automatic network gets another subnet.
        await svc2.create("fresh")
        assert (await svc2.inspect("fresh"))["IPAM"]["Config"][0]["Subnet"] not in (subnet, bridge_subnet)

    run(body())
