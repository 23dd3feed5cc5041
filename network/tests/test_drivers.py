"""The driver conformance suite applied to FakeDriver, NullDriver, HostDriver and (root) BridgeDriver."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from engine import errdefs
from network.bridge import BRIDGE_NAME, BridgeDriver
from network.driver import EndpointSpec, NetworkDriver, NetworkSpec
from network.fake import FakeDriver
from network.firewall import Firewall
from network.host import HostDriver
from network.null import NullDriver
from network.portmap import PortAllocator
from network.sandbox import SandboxManager
from network.tests.driver_suite import DriverSuite, NewNetwork, NewSandbox
from network.tests.nettools import Tag

_ids = itertools.count(1)


def memory_network() -> NetworkSpec:
    n = next(_ids)
    net = IPv4Network(f"10.250.{n % 250}.0/24")
    return NetworkSpec(f"{n:064x}", net, IPv4Interface(f"{net.network_address + 1}/24"))


class TestFakeDriver(DriverSuite):
    @pytest.fixture
    async def driver(self) -> AsyncIterator[NetworkDriver]:
        d = FakeDriver()
        yield d
        await d.close()

    @pytest.fixture
    def new_network(self) -> NewNetwork:
        return memory_network

    @pytest.fixture
    def new_sandbox(self, tmp_path: Path) -> NewSandbox:
        return lambda name: tmp_path / name


class TestNullDriver(TestFakeDriver):
    @pytest.fixture
    async def driver(self) -> AsyncIterator[NetworkDriver]:
        d = NullDriver()
        yield d
        await d.close()

    @pytest.fixture
    def new_network(self) -> NewNetwork:
        return lambda: NetworkSpec(f"{next(_ids):064x}")


class TestHostDriver(TestNullDriver):
    @pytest.fixture
    async def driver(self) -> AsyncIterator[NetworkDriver]:
        d = HostDriver()
        yield d
        await d.close()


@pytest.mark.privileged
class TestBridgeDriver(DriverSuite):
    @pytest.fixture
    async def driver(self, host_guard: Path, tag: Tag) -> AsyncIterator[NetworkDriver]:
        d = BridgeDriver(Firewall(chains=tag.chains), PortAllocator())
        try:
            yield d
        finally:
            await d.close()
            sandboxes = SandboxManager(host_guard)
            for name in sandboxes.list():
                sandboxes.delete(name)

    @pytest.fixture
    def new_network(self, tag: Tag) -> NewNetwork:
        subnets = tag.pool.subnets()
        count = itertools.count(1)

        def make() -> NetworkSpec:
            n, net = next(count), next(subnets)
            return NetworkSpec(
                f"{tag.hex}{n:058x}",
                net,
                IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}"),
                options={BRIDGE_NAME: tag.bridge(n)},
            )

        return make

    @pytest.fixture
    def new_sandbox(self, host_guard: Path) -> NewSandbox:
        sandboxes = SandboxManager(host_guard)
        return lambda name: sandboxes.create(name)


@pytest.mark.anyio
async def test_fake_records_calls_and_fails_on_demand():
    fake = FakeDriver()
    spec = memory_network()
    fake.fail_next("create_network", errdefs.Internal("boom"))
    with pytest.raises(errdefs.Internal, match="boom"):
        await fake.create_network(spec)
    await fake.create_network(spec)
    assert spec.subnet is not None
    ep = EndpointSpec("ep", IPv4Interface(f"{spec.subnet.network_address + 2}/24"))
    info = await fake.create_endpoint(spec.network_id, ep)
    assert info.host_ifname == "vethfake001"
    assert fake.calls == [
        ("create_network", spec.network_id),
        ("create_network", spec.network_id),
        ("create_endpoint", "ep"),
    ]
    with pytest.raises(errdefs.InvalidParameter):
        await fake.create_endpoint(spec.network_id, EndpointSpec("x", IPv4Interface("192.0.2.1/24")))
