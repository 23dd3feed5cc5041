"""The NetworkDriver seam (libnetwork's driverapi, trimmed) and the records crossing it.

A driver turns a network that the engine has already given a pool (``network.ipam``) into kernel
state, and plugs endpoints into sandboxes (``network.sandbox`` netns paths). The order of calls
for one container on one network is::

    create_endpoint -> join(netns) -> publish_ports ... unpublish_ports -> leave -> delete_endpoint

Drivers keep only in-memory state; ``create_network`` is idempotent so the engine can restore its
stored networks at start-up (a bridge left by a crash is adopted and emptied of stale ports), and
``close`` removes the kernel state of every network at shutdown. Endpoints do not survive a daemon
restart (no live-restore), exactly as the containers using them do not.

Implementations: ``network.bridge.BridgeDriver``, ``network.host.HostDriver``,
``network.null.NullDriver``, and ``network.fake.FakeDriver`` for engine tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Protocol

from network.portmap import PortBinding, PortMapping


@dataclass(frozen=True)
class NetworkSpec:
    """``gateway`` carries the subnet's prefix length (172.18.0.1/16); ``options`` are the driver options
    of ``docker network create -o`` (``network.bridge`` lists the keys it reads)."""

    network_id: str
    subnet: IPv4Network | None = None  # None for host and null networks, which have no IPAM
    gateway: IPv4Interface | None = None
    internal: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: str
    address: IPv4Interface | None = None  # None on host and null networks
    mac_address: str | None = None  # None: derived from the address, as dockerd does


@dataclass(frozen=True)
class EndpointInfo:
    network_id: str
    endpoint_id: str
    address: IPv4Interface | None
    mac_address: str  # "" when the driver adds no interface
    host_ifname: str  # the host side of the veth pair; "" for drivers without one


@dataclass(frozen=True)
class JoinInfo:
    ifname: str  # the interface's name inside the sandbox; "" when the driver adds none
    gateway: IPv4Address | None  # the default route it installed, if any


class NetworkDriver(Protocol):
    """All methods are coroutines; kernel work runs in worker threads or subprocesses."""

    name: str  # "bridge", "host", "null"

    async def create_network(self, spec: NetworkSpec) -> None: ...

    async def delete_network(self, network_id: str) -> None: ...

    async def create_endpoint(self, network_id: str, endpoint: EndpointSpec) -> EndpointInfo: ...

    async def join(
        self,
        network_id: str,
        endpoint_id: str,
        netns: Path,
        *,
        ifname: str = "eth0",
        default_route: bool = True,
    ) -> JoinInfo: ...

    async def leave(self, network_id: str, endpoint_id: str) -> None: ...

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None: ...

    async def publish_ports(
        self, network_id: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> list[PortMapping]: ...

    async def unpublish_ports(self, network_id: str, endpoint_id: str) -> None: ...

    async def close(self) -> None: ...


def mac_address(ip: IPv4Address) -> str:
    """dockerd's MAC for an endpoint without one: 02:42 and the four IPv4 bytes (02:42:ac:11:00:02)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
