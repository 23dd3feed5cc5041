"""FakeDriver: the NetworkDriver seam without kernel work, for engine unit tests.

It keeps the same books as ``BridgeDriver`` (networks, endpoints, joins, published ports with a
real ``PortAllocator`` in memory-only mode, so port conflicts produce dockerd's error) and raises
the same error types, which ``network/tests/driver_suite.py`` checks for both. Every call is
recorded in ``calls``; ``fail_next(method, error)`` makes the next call of that method raise, for
testing the engine's unwinding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from engine import errdefs
from network.driver import EndpointInfo, EndpointSpec, JoinInfo, NetworkSpec, mac_address
from network.portmap import PortAllocator, PortBinding, PortMapping

__all__ = ["FakeDriver", "FakeEndpoint"]


@dataclass
class FakeEndpoint:
    info: EndpointInfo
    netns: Path | None = None
    ifname: str = ""
    gateway: IPv4Address | None = None
    mappings: list[PortMapping] = field(default_factory=list)


class FakeDriver:
    def __init__(self, name: str = "bridge", ports: PortAllocator | None = None) -> None:
        self.name = name
        self.ports = ports or PortAllocator((49153, 65535), reserve=False)
        self.calls: list[tuple[str, str]] = []
        self.networks: dict[str, NetworkSpec] = {}
        self.endpoints: dict[tuple[str, str], FakeEndpoint] = {}
        self._failures: dict[str, BaseException] = {}
        self._veths = 0

    def fail_next(self, method: str, error: BaseException) -> None:
        self._failures[method] = error

    def _enter(self, method: str, subject: str) -> None:
        self.calls.append((method, subject))
        failure = self._failures.pop(method, None)
        if failure is not None:
            raise failure

    async def create_network(self, spec: NetworkSpec) -> None:
        self._enter("create_network", spec.network_id)
        if self.name == "bridge" and (spec.subnet is None or spec.gateway is None):
            raise errdefs.InvalidParameter("a bridge network needs a subnet and a gateway")
        self.networks[spec.network_id] = spec

    async def delete_network(self, network_id: str) -> None:
        self._enter("delete_network", network_id)
        if any(nid == network_id for nid, _ in self.endpoints):
            raise errdefs.Forbidden(f"network {network_id} has active endpoints")
        self.networks.pop(network_id, None)

    async def create_endpoint(self, network_id: str, endpoint: EndpointSpec) -> EndpointInfo:
        self._enter("create_endpoint", endpoint.endpoint_id)
        spec = self._network(network_id)
        if (network_id, endpoint.endpoint_id) in self.endpoints:
            raise errdefs.Conflict(f"endpoint {endpoint.endpoint_id} already exists")
        mac, host = endpoint.mac_address or "", ""
        if self.name == "bridge":
            address = endpoint.address
            if address is None or address.network != spec.subnet:
                raise errdefs.InvalidParameter(
                    f"address {address} is not in the network's subnet {spec.subnet}"
                )
            mac = mac or mac_address(address.ip)
            self._veths += 1
            host = f"vethfake{self._veths:03d}"
        info = EndpointInfo(network_id, endpoint.endpoint_id, endpoint.address, mac, host)
        self.endpoints[(network_id, endpoint.endpoint_id)] = FakeEndpoint(info)
        return info

    async def join(
        self,
        network_id: str,
        endpoint_id: str,
        netns: Path,
        *,
        ifname: str = "eth0",
        default_route: bool = True,
    ) -> JoinInfo:
        self._enter("join", endpoint_id)
        ep = self._endpoint(network_id, endpoint_id)
        if ep.netns is not None:
            raise errdefs.Conflict(f"endpoint {endpoint_id} is already joined")
        if self.name != "bridge":
            return JoinInfo("", None)
        for other in self.endpoints.values():
            if other.netns == netns and other.ifname == ifname:
                raise errdefs.Conflict(f"interface {ifname} already exists in the sandbox")
        spec = self.networks[network_id]
        gateway = spec.gateway.ip if spec.gateway and default_route and not spec.internal else None
        ep.netns, ep.ifname, ep.gateway = netns, ifname, gateway
        return JoinInfo(ifname, gateway)

    async def leave(self, network_id: str, endpoint_id: str) -> None:
        self._enter("leave", endpoint_id)
        ep = self._endpoint(network_id, endpoint_id)
        self._unpublish(ep)
        ep.netns, ep.ifname, ep.gateway = None, "", None

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self._enter("delete_endpoint", endpoint_id)
        self._network(network_id)
        ep = self.endpoints.pop((network_id, endpoint_id), None)
        if ep is not None:
            self._unpublish(ep)

    async def publish_ports(
        self, network_id: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> list[PortMapping]:
        self._enter("publish_ports", endpoint_id)
        ep = self._endpoint(network_id, endpoint_id)
        spec = self.networks[network_id]
        if self.name != "bridge" or spec.internal or ep.info.address is None:
            return []
        mappings: list[PortMapping] = []
        try:
            for b in bindings:
                host_ip = IPv4Address(b.host_ip or "0.0.0.0")
                port = self.ports.allocate(b.proto, host_ip, b.host_port, b.host_port_end)
                mappings.append(PortMapping(b.proto, host_ip, port, ep.info.address.ip, b.container_port))
        except BaseException:
            for m in mappings:
                self.ports.release(m.proto, m.host_ip, m.host_port)
            raise
        ep.mappings += mappings
        return mappings

    async def unpublish_ports(self, network_id: str, endpoint_id: str) -> None:
        self._enter("unpublish_ports", endpoint_id)
        self._unpublish(self._endpoint(network_id, endpoint_id))

    async def close(self) -> None:
        self._enter("close", "")
        for ep in self.endpoints.values():
            self._unpublish(ep)
        self.endpoints.clear()
        self.networks.clear()

    def _unpublish(self, ep: FakeEndpoint) -> None:
        for m in ep.mappings:
            self.ports.release(m.proto, m.host_ip, m.host_port)
        ep.mappings = []

    def _network(self, network_id: str) -> NetworkSpec:
        spec = self.networks.get(network_id)
        if spec is None:
            raise errdefs.NotFound(f"network {network_id} not found")
        return spec

    def _endpoint(self, network_id: str, endpoint_id: str) -> FakeEndpoint:
        self._network(network_id)
        ep = self.endpoints.get((network_id, endpoint_id))
        if ep is None:
            raise errdefs.NotFound(f"endpoint {endpoint_id} not found")
        return ep
