"""Conformance suite for NetworkDrivers (containerd's testsuite idea): the same calls, the same
answers and error types from the real drivers and from the fake.

Subclass ``DriverSuite`` and provide the fixtures ``driver`` (a NetworkDriver, closed afterwards),
``new_network`` (returns a NetworkSpec the driver can create: a fresh subnet/bridge for bridge
drivers) and ``new_sandbox`` (returns a netns path, real or not as the driver needs).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from engine import errdefs
from network.driver import EndpointSpec, NetworkDriver, NetworkSpec, mac_address
from network.portmap import PortAllocatedError, PortBinding

NewNetwork = Callable[[], NetworkSpec]
NewSandbox = Callable[[str], Path]


def endpoint_for(spec: NetworkSpec, endpoint_id: str, n: int) -> EndpointSpec:
    if spec.subnet is None:
        return EndpointSpec(endpoint_id)
    return EndpointSpec(
        endpoint_id, IPv4Interface(f"{spec.subnet.network_address + 1 + n}/{spec.subnet.prefixlen}")
    )


@pytest.mark.anyio
class DriverSuite:
    async def test_lifecycle(self, driver: NetworkDriver, new_network: NewNetwork, new_sandbox: NewSandbox):
        spec = new_network()
        await driver.create_network(spec)
        await driver.create_network(spec)  # idempotent: how the engine restores its networks
        ep = endpoint_for(spec, "ep1", 1)
        info = await driver.create_endpoint(spec.network_id, ep)
        assert (info.network_id, info.endpoint_id, info.address) == (spec.network_id, "ep1", ep.address)
        if driver.name == "bridge":
            assert ep.address is not None and spec.gateway is not None
            assert info.mac_address == mac_address(ep.address.ip) and info.host_ifname.startswith("veth")
        else:
            assert (info.mac_address, info.host_ifname) == ("", "")
        joined = await driver.join(spec.network_id, "ep1", new_sandbox("s1"))
        if driver.name == "bridge":
            assert spec.gateway is not None
            assert (joined.ifname, joined.gateway) == ("eth0", spec.gateway.ip)
        else:
            assert (joined.ifname, joined.gateway) == ("", None)
        await driver.leave(spec.network_id, "ep1")
        await driver.delete_endpoint(spec.network_id, "ep1")
        await driver.delete_endpoint(spec.network_id, "ep1")  # idempotent
        await driver.delete_network(spec.network_id)
        await driver.delete_network(spec.network_id)  # idempotent

    async def test_unknown_network_and_endpoint(self, driver: NetworkDriver, new_network: NewNetwork):
        spec = new_network()
        with pytest.raises(errdefs.NotFound):
            await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep", 1))
        await driver.create_network(spec)
        for call in (
            driver.join(spec.network_id, "nope", Path("/nonexistent")),
            driver.leave(spec.network_id, "nope"),
            driver.publish_ports(spec.network_id, "nope", [PortBinding(80)]),
            driver.unpublish_ports(spec.network_id, "nope"),
        ):
            with pytest.raises(errdefs.NotFound):
                await call

    async def test_duplicates_and_busy_networks(self, driver: NetworkDriver, new_network: NewNetwork):
        spec = new_network()
        await driver.create_network(spec)
        await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep", 1))
        with pytest.raises(errdefs.Conflict):
            await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep", 2))
        with pytest.raises(errdefs.Forbidden):
            await driver.delete_network(spec.network_id)
        await driver.delete_endpoint(spec.network_id, "ep")
        await driver.delete_network(spec.network_id)

    async def test_double_join_conflicts(
        self, driver: NetworkDriver, new_network: NewNetwork, new_sandbox: NewSandbox
    ):
        spec = new_network()
        await driver.create_network(spec)
        await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep", 1))
        await driver.join(spec.network_id, "ep", new_sandbox("s1"))
        with pytest.raises(errdefs.Conflict):
            await driver.join(spec.network_id, "ep", new_sandbox("s2"))

    async def test_published_ports(
        self, driver: NetworkDriver, new_network: NewNetwork, new_sandbox: NewSandbox
    ):
        spec = new_network()
        await driver.create_network(spec)
        await driver.create_endpoint(spec.network_id, endpoint_for(spec, "a", 1))
        await driver.create_endpoint(spec.network_id, endpoint_for(spec, "b", 2))
        await driver.join(spec.network_id, "a", new_sandbox("sa"))
        await driver.join(spec.network_id, "b", new_sandbox("sb"))
        got = await driver.publish_ports(spec.network_id, "a", [PortBinding(80, host_ip="127.0.0.1")])
        if driver.name != "bridge":
            assert got == []  # dockerd discards ports on host and none networks
            return
        (mapping,) = got
        assert (mapping.proto, str(mapping.host_ip), mapping.container_port) == ("tcp", "127.0.0.1", 80)
        assert mapping.host_port > 0
        with pytest.raises(PortAllocatedError) as e:
            await driver.publish_ports(
                spec.network_id, "b", [PortBinding(80, host_ip="127.0.0.1", host_port=mapping.host_port)]
            )
        assert e.value.message == f"Bind for 127.0.0.1:{mapping.host_port} failed: port is already allocated"
        # leave unpublishes, so the port is free for another endpoint.
        await driver.leave(spec.network_id, "a")
        again = await driver.publish_ports(
            spec.network_id, "b", [PortBinding(80, host_ip="127.0.0.1", host_port=mapping.host_port)]
        )
        assert again[0].host_port == mapping.host_port

    async def test_close_forgets_everything(
        self, driver: NetworkDriver, new_network: NewNetwork, new_sandbox: NewSandbox
    ):
        spec = new_network()
        await driver.create_network(spec)
        await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep", 1))
        await driver.join(spec.network_id, "ep", new_sandbox("s1"))
        await driver.publish_ports(spec.network_id, "ep", [PortBinding(80)])
        await driver.close()
        with pytest.raises(errdefs.NotFound):
            await driver.create_endpoint(spec.network_id, endpoint_for(spec, "ep2", 2))
