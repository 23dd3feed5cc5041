"""ContainerNetworking over a real NetworkService with FakeDrivers, fake sandboxes and a fake resolver:
create-time validation, sandbox/endpoint/port/DNS set-up and teardown, unwinding, connect/disconnect
of running containers and the embedded DNS's name semantics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import errdefs
from engine.events import EventBus
from engine.networks.attach import ContainerNetworking
from engine.networks.service import NetworkService
from engine.networks.store import NetworkStore
from network.fake import FakeDriver
from network.ipam import Ipam
from network.portmap import PortAllocatedError

T = TypeVar("T")
PREDEFINED = {"bridge": "b" * 64, "host": "c" * 64, "none": "d" * 64}
DAEMON_DNS = ("192.0.2.53",)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


class FakeSandboxes:
    """A sandbox is a plain file under ``root`` (network.sandbox.SandboxManager's books, no netns)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.created: list[str] = []
        self.deleted: list[str] = []

    def create(self, sandbox_id: str, *, ipv6: bool = False) -> Path:
        path = self.root / sandbox_id
        path.touch(exist_ok=False)
        self.created.append(sandbox_id)
        return path

    def delete(self, sandbox_id: str) -> None:
        (self.root / sandbox_id).unlink()
        self.deleted.append(sandbox_id)

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir())


@dataclass
class FakeResolver:
    lookup: Callable[[str], Sequence[IPv4Address]]
    reverse: Callable[[IPv4Address], str | None]
    upstreams: list[str]
    netns: Path | None = None
    closed: bool = False

    async def start_in_netns(self, netns: Path) -> None:
        assert self.netns is None, "started twice"
        self.netns = netns

    async def close(self) -> None:
        self.closed = True


@dataclass
class ResolverFactory:
    made: list[FakeResolver] = field(default_factory=list)

    def __call__(
        self,
        lookup: Callable[[str], Sequence[IPv4Address]],
        reverse: Callable[[IPv4Address], str | None],
        upstreams: Sequence[str],
    ) -> FakeResolver:
        resolver = FakeResolver(lookup, reverse, list(upstreams))
        self.made.append(resolver)
        return resolver


@dataclass
class FakeState:
    running: bool = False
    pid: int = 0
    status: str = "created"


@dataclass
class FakeContainer:
    id: str
    name: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    network_settings: dict[str, Any] = field(default_factory=dict)
    state: FakeState = field(default_factory=FakeState)

    @property
    def short_id(self) -> str:
        return self.id[:12]


class FakeRecords:
    """engine.networks.service.ContainerRecords for the service's connect/disconnect."""

    def __init__(self) -> None:
        self.by_id: dict[str, FakeContainer] = {}
        self.saved: list[str] = []
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, ref: str) -> FakeContainer:
        for c in self.by_id.values():
            if ref in (c.id, c.name.lstrip("/")):
                return c
        raise errdefs.NotFound(f"No such container: {ref}")

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def save(self, c: Any) -> None:
        self.saved.append(c.id)


@dataclass
class Rig:
    root: Path
    bridge: FakeDriver = field(default_factory=FakeDriver)
    events: EventBus = field(default_factory=EventBus)
    resolvers: ResolverFactory = field(default_factory=ResolverFactory)
    records: FakeRecords = field(default_factory=FakeRecords)
    svc: NetworkService = field(init=False)
    sandboxes: FakeSandboxes = field(init=False)
    net: ContainerNetworking = field(init=False)
    _count: int = 0

    def __post_init__(self) -> None:
        drivers = {"bridge": self.bridge, "host": FakeDriver("host"), "null": FakeDriver("null")}
        # 172.17/16 is "taken on the host": the default bridge gets 172.18.0.0/16.
        ipam = Ipam(host_networks=lambda: [IPv4Network("172.17.0.0/16")])
        self.svc = NetworkService(
            NetworkStore(self.root / "networks"), drivers, ipam, self.events, predefined_ids=PREDEFINED
        )
        self.sandboxes = FakeSandboxes(self.root / "netns")
        self.net = ContainerNetworking(
            self.svc, self.sandboxes, self.events, daemon_dns=DAEMON_DNS, resolver_factory=self.resolvers
        )
        self.svc.set_containers(self.records, self.net)

    async def start(self) -> None:
        await self.svc.start()
        await self.net.start()

    async def network(self, name: str, subnet: str, **kw: Any) -> str:
        return (await self.svc.create(name, ipam_config=[{"Subnet": subnet}], **kw))["Id"]

    def container(
        self,
        name: str,
        *,
        mode: str | None = None,
        endpoints: Mapping[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        **host_config: Any,
    ) -> FakeContainer:
        self._count += 1
        cid = f"{self._count:x}".rjust(4, "0") * 16
        hc = dict(host_config)
        if mode is not None:
            hc["NetworkMode"] = mode
        c = FakeContainer(cid, "/" + name, dict(config or {}), hc)
        c.network_settings = self.net.create_settings(hc, {"EndpointsConfig": dict(endpoints or {})})
        self.records.by_id[cid] = c
        return c

    def actions(self) -> list[tuple[str, str, str]]:
        return [
            (e.action, e.attributes.get("name", ""), e.attributes.get("container", ""))
            for e in self.events._ring
            if e.type == "network"
        ]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    with contextlib.suppress(Exception):  # leave no fake sandbox behind a failed test either
        for sid in r.sandboxes.list():
            r.sandboxes.delete(sid)


async def running(rig: Rig, c: FakeContainer) -> Path | None:
    path = await rig.net.setup(c)
    c.state.running, c.state.status = True, "running"
    return path


async def stopped(rig: Rig, c: FakeContainer) -> None:
    await rig.net.teardown(c)
    c.state.running, c.state.status = False, "exited"


def ip4(*addresses: str) -> list[IPv4Address]:
    return [IPv4Address(a) for a in addresses]


# ---- create_settings ------------------------------------------------------------------------


def test_create_settings_networks_and_defaults(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        await rig.network("back", "10.20.0.0/24")
        c = rig.container("plain")
        assert c.network_settings["Ports"] == {}
        assert (c.network_settings["SandboxID"], c.network_settings["SandboxKey"]) == ("", "")
        assert list(c.network_settings["Networks"]) == ["bridge"]
        assert c.network_settings["Networks"]["bridge"] == {
            "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
            "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DNSNames": None,
        }  # fmt: skip
        # "default" is the API's name for the default network, in NetworkMode and EndpointsConfig.
        c = rig.container("dflt", mode="default", endpoints={"default": {"MacAddress": "02:42:aa:bb:cc:dd"}})
        assert list(c.network_settings["Networks"]) == ["bridge"]
        assert c.network_settings["Networks"]["bridge"]["MacAddress"] == "02:42:aa:bb:cc:dd"
        # The primary network comes first whatever the order of EndpointsConfig; entries are keyed by
        # network name even when the request named the network by ID prefix.
        c = rig.container(
            "multi",
            mode="back",
            endpoints={
                front[:10]: {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.10.0.9"}},
                "back": {},
            },
        )
        nets = c.network_settings["Networks"]
        assert list(nets) == ["back", "front"]
        assert nets["front"]["Aliases"] == ["web"]
        assert nets["front"]["IPAMConfig"] == {"IPv4Address": "10.10.0.9"}
        assert nets["back"]["Aliases"] is None and nets["back"]["NetworkID"] == ""
        assert list(rig.container("h", mode="host").network_settings["Networks"]) == ["host"]
        assert list(rig.container("n", mode="none").network_settings["Networks"]) == ["none"]
        assert rig.container("shared", mode="container:abc").network_settings["Networks"] == {}

    run(body())


def test_create_settings_refusals(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        with pytest.raises(errdefs.NotFound, match=r"^network x not found$"):
            rig.container("a", mode="x")
        with pytest.raises(errdefs.NotFound, match=r"^network x not found$"):
            rig.container("a", endpoints={"x": {}})
        ip_text = r"^user specified IP address is supported on user defined networks only$"
        alias_text = r"^network-scoped alias is supported only for containers in user defined networks$"
        with pytest.raises(errdefs.InvalidParameter, match=ip_text):
            rig.container("a", endpoints={"bridge": {"IPAMConfig": {"IPv4Address": "172.18.0.9"}}})
        with pytest.raises(errdefs.InvalidParameter, match=ip_text):
            rig.container(
                "a", mode="default", endpoints={"default": {"IPAMConfig": {"IPv4Address": "1.2.3.4"}}}
            )
        with pytest.raises(errdefs.InvalidParameter, match=alias_text):
            rig.container("a", endpoints={"bridge": {"Aliases": ["x"]}})
        with pytest.raises(
            errdefs.InvalidParameter,
            match=r"^Container cannot be connected to network endpoints: host, front$",
        ):
            rig.container("a", mode="host", endpoints={"front": {}})
        with pytest.raises(
            errdefs.InvalidParameter,
            match=r"^Container cannot be connected to network endpoints: none, front$",
        ):
            rig.container("a", mode="none", endpoints={"none": {}, "front": {}})
        # The same options are fine on a user-defined network.
        c = rig.container("ok", mode="front", endpoints={"front": {"Aliases": ["x"]}})
        assert c.network_settings["Networks"]["front"]["Aliases"] == ["x"]

    run(body())


# ---- setup ----------------------------------------------------------------------------------


def test_setup_primary_and_secondary_endpoints(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        back = await rig.network("back", "10.20.0.0/24")
        c = rig.container(
            "web", mode="front", endpoints={"front": {"Aliases": ["www"]}, "back": {}}, config={}
        )
        path = await running(rig, c)
        ns = c.network_settings
        assert path is not None and path.exists() and ns["SandboxKey"] == str(path)
        assert len(ns["SandboxID"]) == 64 and path.name == ns["SandboxID"][:12]
        assert rig.net.sandbox_path(c) == path
        f, b = ns["Networks"]["front"], ns["Networks"]["back"]
        assert f["NetworkID"] == front and b["NetworkID"] == back
        assert (f["IPAddress"], f["IPPrefixLen"], f["Gateway"]) == ("10.10.0.2", 24, "10.10.0.1")
        assert (b["IPAddress"], b["IPPrefixLen"], b["Gateway"]) == ("10.20.0.2", 24, "10.20.0.1")
        assert f["MacAddress"] == "02:42:0a:0a:00:02" and b["MacAddress"] == "02:42:0a:14:00:02"
        assert f["Aliases"] == ["www", c.short_id] and b["Aliases"] == [c.short_id]
        assert f["DNSNames"] == ["web", "www", c.short_id]
        # eth0 on the primary network with the default route, eth1 on the other without.
        ep_f = rig.bridge.endpoints[(front, f["EndpointID"])]
        ep_b = rig.bridge.endpoints[(back, b["EndpointID"])]
        assert (ep_f.netns, ep_f.ifname, ep_f.gateway) == (path, "eth0", IPv4Address("10.10.0.1"))
        assert (ep_b.netns, ep_b.ifname, ep_b.gateway) == (path, "eth1", None)
        assert rig.net.address_of(c) == "10.10.0.2"
        assert ("connect", "front", c.id) in rig.actions() and ("connect", "back", c.id) in rig.actions()
        view = (await rig.svc.inspect("front"))["Containers"]
        assert view[c.id]["Name"] == "web" and view[c.id]["EndpointID"] == f["EndpointID"]

    run(body())


def test_setup_on_the_default_bridge(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        c = rig.container("plain")
        await running(rig, c)
        s = c.network_settings["Networks"]["bridge"]
        assert s["NetworkID"] == PREDEFINED["bridge"]
        assert (s["IPAddress"], s["IPPrefixLen"], s["Gateway"]) == ("172.18.0.2", 16, "172.18.0.1")
        # No network-scoped names on the default bridge, and no embedded DNS.
        assert s["Aliases"] is None and s["DNSNames"] is None
        assert rig.svc.endpoints("bridge")[0].aliases == ()
        assert rig.resolvers.made == [] and not rig.net.uses_embedded_dns(c)
        assert await rig.svc.default_bridge_gateway() == IPv4Address("172.18.0.1")

    run(body())


def test_setup_none_host_and_container_modes(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        none = rig.container("n", mode="none")
        path = await running(rig, none)
        assert path is not None and path.exists()  # a sandbox of its own with lo only
        assert rig.bridge.endpoints == {} and rig.resolvers.made == []
        assert none.network_settings["Networks"]["none"]["EndpointID"] == ""
        assert rig.net.address_of(none) is None
        await stopped(rig, none)
        assert not path.exists()
        for mode in ("host", "container:" + none.id):
            c = rig.container("m" + str(len(mode)), mode=mode)
            assert await rig.net.setup(c) is None
            assert rig.net.sandbox_path(c) is None
        assert rig.sandboxes.list() == []

    run(body())


def test_short_id_alias_added_once_across_restarts(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front", endpoints={"front": {"Aliases": ["www"]}})
        for _ in range(3):
            await running(rig, c)
            assert c.network_settings["Networks"]["front"]["Aliases"] == ["www", c.short_id]
            assert rig.svc.endpoints("front")[0].aliases == ("www", c.short_id)
            await stopped(rig, c)
            assert c.network_settings["Networks"]["front"]["Aliases"] == ["www", c.short_id]

    run(body())


def test_setup_twice_replaces_the_leftover_sandbox(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front")
        first = await rig.net.setup(c)
        second = await rig.net.setup(c)  # a restart whose cleanup never ran
        assert first is not None and second is not None and first != second
        assert not first.exists() and rig.sandboxes.list() == [second.name]
        assert len(rig.svc.endpoints("front")) == 1 and len(rig.bridge.endpoints) == 1
        assert rig.resolvers.made[0].closed and not rig.resolvers.made[1].closed
        assert c.network_settings["Networks"]["front"]["IPAddress"] == "10.10.0.2"

    run(body())


def test_the_sandbox_exists_before_it_is_wired(rig: Rig) -> None:
    """The runtime creates the container in the namespace while ``wire`` fills it."""

    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front")
        path = await rig.net.create_sandbox(c)
        assert path is not None and rig.sandboxes.list() == [path.name]
        assert c.network_settings["SandboxKey"] == str(path)
        assert rig.net.address_of(c) is None and rig.svc.endpoints("front") == []
        await rig.net.wire(c)
        assert rig.net.address_of(c) == "10.10.0.2" and len(rig.bridge.endpoints) == 1
        await rig.net.teardown(c)
        assert rig.sandboxes.list() == []

        # A failed wiring leaves the namespace the runtime may be creating the container in:
        # the caller's teardown, once the runtime is done, removes it with the rest.
        await rig.network("back", "10.20.0.0/24")
        c = rig.container("two", mode="front", endpoints={"front": {}, "back": {}})
        path = await rig.net.create_sandbox(c)
        assert path is not None
        rig.bridge.fail_next("join", errdefs.Internal("cannot add veth"))
        with pytest.raises(errdefs.Internal):
            await rig.net.wire(c)
        assert rig.sandboxes.list() == [path.name]
        await rig.net.teardown(c)
        assert_nothing_left(rig, c)

    run(body())


def test_ports_view_and_publishing(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        c = rig.container(
            "web",
            config={"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "9000/tcp": {}}},
            PortBindings={"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81": [{"HostPort": "8081"}]},
        )
        await running(rig, c)
        ip = IPv4Address("172.18.0.2")
        assert c.network_settings["Ports"] == {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
            "53/udp": None,  # exposed, not published
            "9000/tcp": None,
            "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}],
        }
        ep = rig.bridge.endpoints[
            (PREDEFINED["bridge"], c.network_settings["Networks"]["bridge"]["EndpointID"])
        ]
        assert {(m.host_port, m.container_ip, m.container_port) for m in ep.mappings} == {
            (8080, ip, 80),
            (8081, ip, 81),
        }
        await stopped(rig, c)
        assert c.network_settings["Ports"] == {}
        assert rig.bridge.ports.allocated() == []

    run(body())


def test_publish_all_ports_gets_ephemeral_ports(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        c = rig.container(
            "web",
            config={"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
            PublishAllPorts=True,
            PortBindings={"80/tcp": [{"HostPort": "8080"}]},
        )
        await running(rig, c)
        ports = c.network_settings["Ports"]
        assert ports["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]  # its own binding wins
        assert len(ports["53/udp"]) == 1 and ports["53/udp"][0]["HostIp"] == "0.0.0.0"
        assert 49153 <= int(ports["53/udp"][0]["HostPort"]) <= 65535
        assert len(rig.bridge.ports.allocated()) == 2

    run(body())


def test_ports_are_published_on_the_first_non_internal_network_only(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        priv = await rig.network("priv", "10.30.0.0/24", internal=True)
        front = await rig.network("front", "10.10.0.0/24")
        back = await rig.network("back", "10.20.0.0/24")
        c = rig.container(
            "web",
            mode="priv",
            endpoints={"front": {}, "back": {}},
            config={"ExposedPorts": {"80/tcp": {}}},
            PortBindings={"80/tcp": [{"HostPort": "8080"}]},
        )
        await running(rig, c)
        nets = c.network_settings["Networks"]
        published = [
            nid
            for nid, name in ((priv, "priv"), (front, "front"), (back, "back"))
            if rig.bridge.endpoints[(nid, nets[name]["EndpointID"])].mappings
        ]
        assert published == [front]
        assert [c for c in rig.bridge.calls if c[0] == "publish_ports"] == [
            ("publish_ports", nets["front"]["EndpointID"])
        ]
        assert c.network_settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}

    run(body())


def test_all_internal_networks_publish_nothing(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("priv", "10.30.0.0/24", internal=True)
        c = rig.container(
            "web", mode="priv", config={"ExposedPorts": {"80/tcp": {}}}, PortBindings={"80/tcp": [{}]}
        )
        await running(rig, c)
        assert c.network_settings["Ports"] == {"80/tcp": None}
        assert rig.bridge.ports.allocated() == []

    run(body())


# ---- embedded DNS ---------------------------------------------------------------------------


def test_dns_starts_with_a_user_network_with_explicit_upstreams(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front", Dns=["198.51.100.1", "not-an-ip", "192.0.2.53"])
        path = await running(rig, c)
        assert len(rig.resolvers.made) == 1 and rig.net.uses_embedded_dns(c)
        resolver = rig.resolvers.made[0]
        assert resolver.netns == path
        # The container's own --dns first, then the daemon's, without duplicates or non-addresses.
        assert resolver.upstreams == ["198.51.100.1", "192.0.2.53"]
        assert resolver.lookup("web") == ip4("10.10.0.2")
        assert resolver.reverse(IPv4Address("10.10.0.2")) == "web.front"
        await stopped(rig, c)
        assert resolver.closed and not rig.net.uses_embedded_dns(c)
        assert resolver.lookup("web") == []

    run(body())


def test_dns_forwards_nothing_on_internal_networks(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("priv", "10.30.0.0/24", internal=True)
        await rig.network("priv2", "10.31.0.0/24", internal=True)
        c = rig.container("web", mode="priv", endpoints={"priv2": {}}, Dns=["198.51.100.1"])
        await running(rig, c)
        assert [r.upstreams for r in rig.resolvers.made] == [[]]
        # One network with external connectivity is enough for forwarding.
        await rig.network("front", "10.10.0.0/24")
        d = rig.container("db", mode="priv", endpoints={"front": {}})
        await running(rig, d)
        assert rig.resolvers.made[1].upstreams == list(DAEMON_DNS)

    run(body())


def test_lookup_and_reverse_semantics(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("Front", "10.10.0.0/24")
        await rig.network("back", "10.20.0.0/24")
        await rig.network("other", "10.40.0.0/24")
        web = rig.container("Web", mode="Front", endpoints={"Front": {"Aliases": ["WWW"]}, "bridge": {}})
        db = rig.container("db", mode="Front", endpoints={"back": {"Aliases": ["store", "pair"]}})
        lone = rig.container("lone", mode="other", endpoints={"bridge": {}})
        back_first = rig.container("bf", mode="back", endpoints={"Front": {}, "back": {"Aliases": ["pair"]}})
        for c in (web, db, lone, back_first):
            await running(rig, c)
        look, rev = rig.net.lookup, rig.net.reverse
        # The embedded server asks in lower case (network.dns.normalize); stored names may be upper case.
        assert look(db.id, "web") == ip4("10.10.0.2")
        assert look(db.id, "www") == ip4("10.10.0.2")
        assert look(db.id, web.short_id) == ip4("10.10.0.2")
        assert look(db.id, "web.front") == ip4("10.10.0.2")
        assert look(db.id, "www.front") == ip4("10.10.0.2")
        assert look(db.id, "web.back") == []  # web is not on back
        # Several networks know db: the answer comes from the asker's first one (eth0 first), as
        # dockerd's; several endpoints with one alias on that network all answer.
        assert look(web.id, "db") == ip4("10.10.0.3")
        assert look(db.id, "db") == ip4("10.10.0.3")
        assert look(back_first.id, "db") == ip4("10.20.0.2")
        assert look(back_first.id, "db.front") == ip4("10.10.0.3")
        assert look(db.id, "pair") == ip4("10.20.0.2", "10.20.0.3")
        assert look(db.id, "store") == ip4("10.20.0.2")
        assert look(web.id, "store") == []  # an alias on back, which web does not share
        assert look(db.id, "db.back") == ip4("10.20.0.2")
        # Nothing across networks the asking container is not on, and never on the default bridge.
        assert look(lone.id, "web") == [] and look(lone.id, "lone") == ip4("10.40.0.2")
        assert look(web.id, "lone") == [] and look(lone.id, "db") == []
        assert look(db.id, "nope") == [] and look("f" * 64, "web") == []
        assert rev(db.id, IPv4Address("10.10.0.2")) == "Web.Front"
        assert rev(db.id, IPv4Address("10.20.0.2")) == "db.back"
        assert rev(web.id, IPv4Address("10.20.0.2")) is None
        assert rev(lone.id, IPv4Address("172.18.0.2")) is None  # web's address on the default bridge
        assert rev(db.id, IPv4Address("10.10.0.99")) is None
        await stopped(rig, web)
        assert look(db.id, "web") == [] and rev(db.id, IPv4Address("10.10.0.2")) is None

    run(body())


# ---- failures -------------------------------------------------------------------------------


def assert_nothing_left(rig: Rig, c: FakeContainer) -> None:
    assert rig.sandboxes.list() == []
    assert rig.bridge.endpoints == {}
    assert all(rig.svc.endpoints(n) == [] for n in ("bridge", "front", "back") if _exists(rig, n))
    assert rig.bridge.ports.allocated() == []
    assert rig.net.sandbox_path(c) is None and not rig.net.uses_embedded_dns(c)
    assert all(r.closed for r in rig.resolvers.made)


def _exists(rig: Rig, name: str) -> bool:
    try:
        rig.svc.record(name)
    except errdefs.NotFound:
        return False
    return True


def test_join_failure_unwinds_everything(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        await rig.network("back", "10.20.0.0/24")
        c = rig.container("web", mode="front", endpoints={"back": {}})
        joins = 0

        real_join = rig.bridge.join

        async def join(*args: Any, **kw: Any) -> Any:
            nonlocal joins
            joins += 1
            if joins == 2:  # the second network's join fails after the first one succeeded
                raise errdefs.Internal("cannot add veth")
            return await real_join(*args, **kw)

        rig.bridge.join = join  # type: ignore[method-assign]
        with pytest.raises(errdefs.Internal, match=r"^cannot add veth$"):
            await rig.net.setup(c)
        assert_nothing_left(rig, c)
        assert c.network_settings["Ports"] == {}
        for name in ("front", "back"):
            assert c.network_settings["Networks"][name]["EndpointID"] == ""
            assert c.network_settings["Networks"][name]["IPAddress"] == ""
        # The addresses were released: the next start gets the same ones.
        rig.bridge.join = real_join  # type: ignore[method-assign]
        await running(rig, c)
        assert c.network_settings["Networks"]["front"]["IPAddress"] == "10.10.0.2"
        assert c.network_settings["Networks"]["back"]["IPAddress"] == "10.20.0.2"

    run(body())


def test_fail_next_join_on_the_first_network(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front")
        rig.bridge.fail_next("join", errdefs.Conflict("interface eth0 already exists in the sandbox"))
        with pytest.raises(errdefs.Conflict, match="interface eth0 already exists"):
            await rig.net.setup(c)
        assert_nothing_left(rig, c)
        assert ("delete_endpoint", rig.bridge.calls[-2][1]) in rig.bridge.calls
        assert not any(a == "connect" for a, _, _ in rig.actions())

    run(body())


def test_port_conflict_unwinds_with_dockerds_text(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        first = rig.container("first", PortBindings={"80/tcp": [{"HostPort": "8080"}]})
        await running(rig, first)
        c = rig.container(
            "web", mode="default", endpoints={"front": {}}, PortBindings={"80/tcp": [{"HostPort": "8080"}]}
        )
        with pytest.raises(errdefs.Internal) as info:
            await rig.net.setup(c)
        # The failing endpoint is the one on the default bridge (the first non-internal network).
        text = info.value.message
        prefix = "driver failed programming external connectivity on endpoint web ("
        assert text.startswith(prefix)
        failed_epid = text[len(prefix) : len(prefix) + 64]
        assert text == f"{prefix}{failed_epid}): Bind for 0.0.0.0:8080 failed: port is already allocated"
        assert ("publish_ports", failed_epid) in rig.bridge.calls
        assert ("delete_endpoint", failed_epid) in rig.bridge.calls
        # Only the first container's endpoint and its binding are left.
        assert rig.sandboxes.list() == [Path(first.network_settings["SandboxKey"]).name]
        assert len(rig.bridge.endpoints) == 1 and rig.svc.endpoints("front") == []
        assert [p for _, _, p in rig.bridge.ports.allocated()] == [8080]
        assert rig.net.sandbox_path(c) is None
        await stopped(rig, first)
        await running(rig, c)
        assert c.network_settings["Networks"]["bridge"]["IPAddress"] == "172.18.0.2"
        assert c.network_settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}

    run(body())


def test_fail_next_publish_ports_unwinds(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front", PortBindings={"80/tcp": [{"HostPort": "8080"}]})
        rig.bridge.fail_next("publish_ports", PortAllocatedError(IPv4Address("0.0.0.0"), 8080))
        with pytest.raises(errdefs.Internal) as info:
            await rig.net.setup(c)
        epid = next(s for m, s in rig.bridge.calls if m == "publish_ports")
        assert info.value.message == (
            f"driver failed programming external connectivity on endpoint web ({epid}): "
            "Bind for 0.0.0.0:8080 failed: port is already allocated"
        )
        assert_nothing_left(rig, c)
        assert ("delete_endpoint", epid) in rig.bridge.calls
        assert rig.resolvers.made == []  # DNS comes after the ports; it never started
        assert ("disconnect", "front", c.id) in rig.actions()

    run(body())


def test_resolver_failure_unwinds(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front")

        def broken(*args: Any) -> FakeResolver:
            raise OSError("address in use")

        rig.net.resolver_factory = broken
        with pytest.raises(OSError, match="address in use"):
            await rig.net.setup(c)
        assert_nothing_left(rig, c)

    run(body())


# ---- teardown -------------------------------------------------------------------------------


def test_teardown_releases_everything_and_keeps_dockerds_stopped_view(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        c = rig.container(
            "web",
            mode="front",
            endpoints={"front": {"Aliases": ["www"], "IPAMConfig": {"IPv4Address": "10.10.0.7"}}},
            PortBindings={"80/tcp": [{"HostPort": "8080"}]},
        )
        path = await running(rig, c)
        sandbox_id, key = c.network_settings["SandboxID"], c.network_settings["SandboxKey"]
        epid = c.network_settings["Networks"]["front"]["EndpointID"]
        assert c.network_settings["Networks"]["front"]["IPAddress"] == "10.10.0.7"
        await stopped(rig, c)
        assert path is not None and not path.exists() and rig.sandboxes.deleted == [path.name]
        assert rig.bridge.endpoints == {} and rig.svc.endpoints("front") == []
        assert ("delete_endpoint", epid) in rig.bridge.calls
        assert rig.resolvers.made[0].closed
        assert c.network_settings["Ports"] == {}
        assert (c.network_settings["SandboxID"], c.network_settings["SandboxKey"]) == (sandbox_id, key)
        s = c.network_settings["Networks"]["front"]
        assert s["NetworkID"] == front and s["Aliases"] == ["www", c.short_id]
        assert s["IPAMConfig"] == {"IPv4Address": "10.10.0.7"}
        assert (s["EndpointID"], s["IPAddress"], s["IPPrefixLen"], s["Gateway"], s["MacAddress"]) == (
            "",
            "",
            0,
            "",
            "",
        )
        assert s["DNSNames"] is None
        assert [a for a in rig.actions() if a[2] == c.id] == [
            ("connect", "front", c.id),
            ("disconnect", "front", c.id),
        ]
        # The address and the host port are free again.
        other = rig.container(
            "other",
            mode="front",
            endpoints={"front": {"IPAMConfig": {"IPv4Address": "10.10.0.7"}}},
            PortBindings={"80/tcp": [{"HostPort": "8080"}]},
        )
        await running(rig, other)
        assert other.network_settings["Networks"]["front"]["IPAddress"] == "10.10.0.7"
        await rig.net.teardown(other)
        await rig.net.teardown(other)  # a second teardown is a no-op
        assert rig.sandboxes.list() == []

    run(body())


def test_second_container_gets_the_released_address(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        a = rig.container("a")
        await running(rig, a)
        assert a.network_settings["Networks"]["bridge"]["IPAddress"] == "172.18.0.2"
        await stopped(rig, a)
        b = rig.container("b")
        await running(rig, b)
        assert b.network_settings["Networks"]["bridge"]["IPAddress"] == "172.18.0.2"

    run(body())


def test_teardown_survives_a_failing_sandbox_delete(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        c = rig.container("web")
        path = await running(rig, c)
        assert path is not None
        path.unlink()  # the sandbox vanished behind our back: delete raises, teardown carries on
        await stopped(rig, c)
        assert rig.bridge.endpoints == {} and c.network_settings["Ports"] == {}
        assert rig.net.sandbox_path(c) is None

    run(body())


# ---- connect / disconnect of running containers ---------------------------------------------


def test_connect_and_disconnect_a_running_container(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        back = await rig.network("back", "10.20.0.0/24")
        c = rig.container("web")
        path = await running(rig, c)
        assert rig.resolvers.made == []
        await rig.svc.connect("front", "web", {"Aliases": ["www"]})
        assert rig.records.saved[-1] == c.id
        s = c.network_settings["Networks"]["front"]
        assert (s["NetworkID"], s["IPAddress"], s["Aliases"]) == (front, "10.10.0.2", ["www", c.short_id])
        ep = rig.bridge.endpoints[(front, s["EndpointID"])]
        assert (ep.netns, ep.ifname, ep.gateway) == (path, "eth1", None)
        # The first user-defined network starts the embedded DNS.
        assert len(rig.resolvers.made) == 1 and rig.resolvers.made[0].netns == path
        assert rig.resolvers.made[0].lookup("www.front") == ip4("10.10.0.2")
        await rig.svc.connect(back, c.id, None)
        assert len(rig.resolvers.made) == 1  # still the one server
        epb = rig.bridge.endpoints[(back, c.network_settings["Networks"]["back"]["EndpointID"])]
        assert epb.ifname == "eth2"
        assert ("connect", "back", c.id) in rig.actions()
        with pytest.raises(
            errdefs.Forbidden, match=r"^endpoint with name web already exists in network front$"
        ):
            await rig.svc.connect("front", c.id, None)
        await rig.svc.disconnect("front", c.id)
        assert "front" not in c.network_settings["Networks"]
        assert rig.svc.endpoints("front") == [] and (front, s["EndpointID"]) not in rig.bridge.endpoints
        assert rig.actions()[-1] == ("disconnect", "front", c.id)
        assert rig.resolvers.made[0].lookup("web.front") == []
        with pytest.raises(errdefs.Forbidden, match=rf"^container {c.id} is not connected to network front$"):
            await rig.svc.disconnect("front", c.id)
        # The freed interface name is used again.
        await rig.svc.connect("front", c.id, None)
        s = c.network_settings["Networks"]["front"]
        assert rig.bridge.endpoints[(front, s["EndpointID"])].ifname == "eth1"
        await stopped(rig, c)
        assert rig.bridge.endpoints == {} and rig.sandboxes.list() == []
        assert set(c.network_settings["Networks"]) == {"bridge", "front", "back"}

    run(body())


def test_connect_failure_leaves_the_container_as_it_was(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        await rig.network("front", "10.10.0.0/24")
        c = rig.container("web")
        await running(rig, c)
        rig.bridge.fail_next("join", errdefs.Internal("cannot add veth"))
        with pytest.raises(errdefs.Internal, match="cannot add veth"):
            await rig.svc.connect("front", c.id, None)
        assert list(c.network_settings["Networks"]) == ["bridge"]
        assert rig.svc.endpoints("front") == [] and len(rig.bridge.endpoints) == 1
        with pytest.raises(errdefs.Conflict, match="is not running"):
            await rig.net.connect(rig.container("idle"), "front", {})

    run(body())


def test_connect_and_disconnect_a_stopped_container_only_record(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        c = rig.container("web")
        await rig.svc.connect("front", c.id, {"Aliases": ["www"]})
        assert c.network_settings["Networks"]["front"]["NetworkID"] == front
        assert rig.bridge.endpoints == {} and rig.sandboxes.list() == []
        await running(rig, c)
        assert c.network_settings["Networks"]["front"]["Aliases"] == ["www", c.short_id]
        assert c.network_settings["Networks"]["front"]["IPAddress"] == "10.10.0.2"
        await stopped(rig, c)
        await rig.svc.disconnect("front", c.id)
        assert list(c.network_settings["Networks"]) == ["bridge"]

    run(body())


# ---- daemon start ---------------------------------------------------------------------------


def test_start_deletes_stale_sandboxes(rig: Rig) -> None:
    async def body() -> None:
        for sid in ("0123456789ab", "ba9876543210"):
            (rig.sandboxes.root / sid).touch()
        await rig.start()
        assert rig.sandboxes.list() == []
        assert sorted(rig.sandboxes.deleted) == ["0123456789ab", "ba9876543210"]

    run(body())


def test_requested_mac_address_is_used(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        front = await rig.network("front", "10.10.0.0/24")
        c = rig.container("web", mode="front", endpoints={"front": {"MacAddress": "02:42:aa:bb:cc:dd"}})
        await running(rig, c)
        s = c.network_settings["Networks"]["front"]
        assert s["MacAddress"] == "02:42:aa:bb:cc:dd"
        assert rig.bridge.endpoints[(front, s["EndpointID"])].info.mac_address == "02:42:aa:bb:cc:dd"
        await stopped(rig, c)
        # dockerd 20.10's cleanOperationalData clears it at stop, requested or not.
        assert s["MacAddress"] == ""

    run(body())


def test_concurrent_first_starts_share_the_default_bridge(rig: Rig) -> None:
    async def body() -> None:
        await rig.start()
        a, b = rig.container("a"), rig.container("b")
        # Two starts and a "network ls" racing for the lazily made default bridge.
        await asyncio.gather(running(rig, a), running(rig, b), rig.svc.list())
        addresses = {c.network_settings["Networks"]["bridge"]["IPAddress"] for c in (a, b)}
        assert addresses == {"172.18.0.2", "172.18.0.3"}
        assert [p.subnet for p in rig.svc.ipam.pools()] == [IPv4Network("172.18.0.0/16")]
        assert [s for m, s in rig.bridge.calls if m == "create_network"] == [PREDEFINED["bridge"]]

    run(body())
