"""LazyDriver: a NetworkDriver built on its first use.

The bridge driver pulls in pyroute2 (about 10 MiB of resident memory); a daemon that never makes
a bridge network should not pay for it, so the composition root hands the service this proxy.
``close`` on a driver never built has nothing to remove.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from network.driver import EndpointInfo, EndpointSpec, JoinInfo, NetworkDriver, NetworkSpec
from network.portmap import PortBinding, PortMapping


class LazyDriver:
    def __init__(self, name: str, factory: Callable[[], NetworkDriver]) -> None:
        self.name = name
        self._factory = factory
        self._driver: NetworkDriver | None = None

    @property
    def built(self) -> bool:
        return self._driver is not None

    def get(self) -> NetworkDriver:
        if self._driver is None:
            self._driver = self._factory()
        return self._driver

    async def create_network(self, spec: NetworkSpec) -> None:
        await self.get().create_network(spec)

    async def delete_network(self, network_id: str) -> None:
        await self.get().delete_network(network_id)

    async def create_endpoint(self, network_id: str, endpoint: EndpointSpec) -> EndpointInfo:
        return await self.get().create_endpoint(network_id, endpoint)

    async def join(
        self,
        network_id: str,
        endpoint_id: str,
        netns: Path,
        *,
        ifname: str = "eth0",
        default_route: bool = True,
    ) -> JoinInfo:
        return await self.get().join(
            network_id, endpoint_id, netns, ifname=ifname, default_route=default_route
        )

    async def leave(self, network_id: str, endpoint_id: str) -> None:
        await self.get().leave(network_id, endpoint_id)

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        await self.get().delete_endpoint(network_id, endpoint_id)

    async def publish_ports(
        self, network_id: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> list[PortMapping]:
        return await self.get().publish_ports(network_id, endpoint_id, bindings)

    async def unpublish_ports(self, network_id: str, endpoint_id: str) -> None:
        await self.get().unpublish_ports(network_id, endpoint_id)

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()


class LazySandboxes:
    """network.sandbox.SandboxManager (pyroute2 again) made on first use; listing an empty or
    missing sandbox directory, which every daemon start does, needs no manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._manager: Any = None

    def _get(self) -> Any:
        if self._manager is None:
            from network.sandbox import SandboxManager

            self._manager = SandboxManager(self.root)
        return self._manager

    def create(self, sandbox_id: str, *, ipv6: bool = False) -> Path:
        path: Path = self._get().create(sandbox_id, ipv6=ipv6)
        return path

    def delete(self, sandbox_id: str) -> None:
        self._get().delete(sandbox_id)

    def list(self) -> list[str]:
        try:
            if not any(self.root.iterdir()):
                return []
        except FileNotFoundError:
            return []
        names: list[str] = self._get().list()
        return names
