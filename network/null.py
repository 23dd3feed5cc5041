"""NullDriver: the ``none`` network. Endpoints are bookkeeping only; the sandbox keeps just ``lo``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine import errdefs
from network.driver import EndpointInfo, EndpointSpec, JoinInfo, NetworkSpec
from network.portmap import PortBinding, PortMapping


class NullDriver:
    name = "null"

    def __init__(self) -> None:
        self._networks: dict[str, dict[str, EndpointInfo]] = {}
        self._joined: set[tuple[str, str]] = set()

    async def create_network(self, spec: NetworkSpec) -> None:
        self._networks.setdefault(spec.network_id, {})

    async def delete_network(self, network_id: str) -> None:
        if self._networks.get(network_id):
            raise errdefs.Forbidden(f"network {network_id} has active endpoints")
        self._networks.pop(network_id, None)

    async def create_endpoint(self, network_id: str, endpoint: EndpointSpec) -> EndpointInfo:
        endpoints = self._endpoints(network_id)
        if endpoint.endpoint_id in endpoints:
            raise errdefs.Conflict(f"endpoint {endpoint.endpoint_id} already exists")
        info = EndpointInfo(
            network_id, endpoint.endpoint_id, endpoint.address, endpoint.mac_address or "", ""
        )
        endpoints[endpoint.endpoint_id] = info
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
        self._endpoint(network_id, endpoint_id)
        if (network_id, endpoint_id) in self._joined:
            raise errdefs.Conflict(f"endpoint {endpoint_id} is already joined")
        self._joined.add((network_id, endpoint_id))
        return JoinInfo("", None)

    async def leave(self, network_id: str, endpoint_id: str) -> None:
        self._endpoint(network_id, endpoint_id)
        self._joined.discard((network_id, endpoint_id))

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self._endpoints(network_id).pop(endpoint_id, None)
        self._joined.discard((network_id, endpoint_id))

    async def publish_ports(
        self, network_id: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> list[PortMapping]:
        # dockerd discards published ports on these networks ("Published ports are discarded ...").
        self._endpoint(network_id, endpoint_id)
        return []

    async def unpublish_ports(self, network_id: str, endpoint_id: str) -> None:
        self._endpoint(network_id, endpoint_id)

    async def close(self) -> None:
        self._networks.clear()
        self._joined.clear()

    def _endpoints(self, network_id: str) -> dict[str, EndpointInfo]:
        endpoints = self._networks.get(network_id)
        if endpoints is None:
            raise errdefs.NotFound(f"network {network_id} not found")
        return endpoints

    def _endpoint(self, network_id: str, endpoint_id: str) -> EndpointInfo:
        info = self._endpoints(network_id).get(endpoint_id)
        if info is None:
            raise errdefs.NotFound(f"endpoint {endpoint_id} not found")
        return info
