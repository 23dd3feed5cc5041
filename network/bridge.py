"""BridgeDriver: Linux bridges and veth pairs through pyroute2, iptables through ``network.firewall``.

A network is a bridge (``br-<id12>``, or ``com.docker.network.bridge.name``; ``skiff0`` for the
default network, which the engine names that way) carrying the gateway address. An endpoint is a
veth pair, made by ``join``: the host side ``veth<7 hex>`` (named when the endpoint is created) is a
port of the bridge (hairpin on, so a container can reach itself through its published port), the
peer is created inside the sandbox as ``eth0``, with the endpoint's address and MAC and a default
route via the gateway (unless the network is internal or the caller asks for none). Deleting the
interface inside the sandbox, or the sandbox itself, destroys both ends.

The link work itself is in ``network.links`` and runs in worker threads; this module keeps the
books (networks, endpoints, published ports) and drives the firewall and the port allocator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address
from pathlib import Path
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from engine import errdefs
from network.driver import EndpointInfo, EndpointSpec, JoinInfo, NetworkSpec, mac_address
from network.firewall import BridgeRules, Firewall, PortForward
from network.links import (
    create_veth_in_sandbox,
    delete_bridge,
    delete_veth,
    ensure_bridge,
    release_bridge_addresses,
    remove_from_sandbox,
    write_sysctl,
)
from network.portmap import ANY_ADDRESS, PortAllocator, PortBinding, PortMapping

T = TypeVar("T")
log = logging.getLogger(__name__)

# Driver options (docker network create -o), as dockerd's bridge driver names them.
BRIDGE_NAME = "com.docker.network.bridge.name"
MTU = "com.docker.network.driver.mtu"
ENABLE_ICC = "com.docker.network.bridge.enable_icc"
ENABLE_IP_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
DEFAULT_MTU = 1500
_IFNAME = re.compile(r"[^\s/:]{1,15}")


@dataclass(frozen=True)
class BridgeConfig:
    """A network's driver options, parsed and checked."""

    bridge: str
    subnet: IPv4Network
    gateway: IPv4Interface
    mtu: int = DEFAULT_MTU
    icc: bool = True
    masquerade: bool = True
    host_binding_ipv4: IPv4Address = ANY_ADDRESS

    @classmethod
    def from_spec(cls, spec: NetworkSpec) -> BridgeConfig:
        if spec.subnet is None or spec.gateway is None:
            raise errdefs.InvalidParameter("a bridge network needs a subnet and a gateway")
        opts = spec.options
        name = opts.get(BRIDGE_NAME) or f"br-{spec.network_id[:12]}"
        if not _IFNAME.fullmatch(name):
            raise errdefs.InvalidParameter(f"invalid bridge name: {name!r}")
        try:
            mtu = int(opts.get(MTU) or DEFAULT_MTU)
            host_ip = IPv4Address(opts.get(HOST_BINDING_IPV4) or "0.0.0.0")
        except ValueError as e:
            raise errdefs.InvalidParameter(f"invalid network option: {e}") from None
        if not 68 <= mtu <= 65535:
            raise errdefs.InvalidParameter(f"invalid MTU number: {mtu}")
        return cls(
            name,
            spec.subnet,
            spec.gateway,
            mtu,
            _bool_opt(opts, ENABLE_ICC),
            _bool_opt(opts, ENABLE_IP_MASQUERADE),
            host_ip,
        )


def _bool_opt(opts: Mapping[str, str], key: str) -> bool:
    value = str(opts.get(key, "true")).strip().lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise errdefs.InvalidParameter(f"invalid value for {key}: {value!r}")


@dataclass
class _Endpoint:
    info: EndpointInfo
    address: IPv4Interface
    netns: Path | None = None
    ifname: str = ""
    mappings: list[PortMapping] = field(default_factory=list)
    made: bool = False  # whether join made the veth pair (the host name is only reserved before)


@dataclass
class _Network:
    spec: NetworkSpec
    config: BridgeConfig
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)


def _netlink(what: str, e: NetlinkError) -> errdefs.EngineError:
    return errdefs.Internal(f"{what}: {os.strerror(e.code) if e.code > 0 else e}")


def _binding_address(text: str, default: IPv4Address) -> IPv4Address | None:
    if not text:
        return default
    try:
        ip = ip_address(text)
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid IP address in port binding: {text}") from None
    return ip if isinstance(ip, IPv4Address) else None


class BridgeDriver:
    """``ip_forward=True`` sets net.ipv4.ip_forward=1 with the first network, as dockerd's --ip-forward
    does; skiff's daemon passes its flag, tests leave the host's setting alone. ``link_alias`` is the
    daemon's mark on its bridges and veths (``network.reconcile.DaemonMarks``)."""

    name = "bridge"

    def __init__(
        self,
        firewall: Firewall | None = None,
        ports: PortAllocator | None = None,
        *,
        ip_forward: bool = False,
        link_alias: str | None = None,
    ) -> None:
        self.firewall = firewall or Firewall()
        self.ports = ports or PortAllocator()
        self.ip_forward = ip_forward
        self.link_alias = link_alias  # marks bridges and veths for network.reconcile
        self._networks: dict[str, _Network] = {}
        self._removing: set[asyncio.Task[None]] = set()  # bridges being deleted in the background

    async def create_network(self, spec: NetworkSpec) -> None:
        config = BridgeConfig.from_spec(spec)
        existing = self._networks.get(spec.network_id)
        if existing is not None:
            if existing.spec == spec:
                return
            raise errdefs.Conflict(f"network {spec.network_id} already exists with another configuration")
        for other in self._networks.values():
            if other.config.bridge == config.bridge and other.spec.network_id != spec.network_id:
                raise errdefs.Forbidden(
                    f"cannot create network {spec.network_id} ({config.bridge}): conflicts with network "
                    f"{other.spec.network_id} ({other.config.bridge}): networks have same bridge name"
                )
        await self._thread(
            functools.partial(
                ensure_bridge,
                config.bridge,
                config.gateway,
                config.mtu,
                route_localnet=not spec.internal,
                owner=spec.network_id,
                alias=self.link_alias,
            ),
            what="failed to create bridge",
        )
        try:
            if self.ip_forward and not spec.internal:
                await asyncio.to_thread(write_sysctl, "net.ipv4.ip_forward", "1")
            await self.firewall.add_network(
                BridgeRules(config.bridge, config.subnet, spec.internal, config.icc, config.masquerade)
            )
        except BaseException:
            await self._thread(delete_bridge, config.bridge, what="failed to delete bridge")
            raise
        self._networks[spec.network_id] = _Network(spec, config)

    async def delete_network(self, network_id: str) -> None:
        net = self._networks.get(network_id)
        if net is None:
            return
        if net.endpoints:
            raise errdefs.Forbidden(f"network {network_id} has active endpoints")
        bridge = net.config.bridge
        removal = self._thread(delete_bridge, bridge, what="failed to delete bridge")
        if net.spec.options.get(BRIDGE_NAME):
            # A name the user chose may be asked for again at once: gone before the answer. The
            # rules go meanwhile (they may name an interface that does not exist).
            results = await asyncio.gather(
                self.firewall.remove_network(bridge), removal, return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        else:
            # br-<network id> is never asked for again, and unregistering a netdev waits for
            # RCU grace periods (20-40 ms): the rules go now, the link in the background
            # (``close`` waits for it; a crash leaves it marked for ``network.reconcile``).
            # Its addresses go now, so its subnet is free for the next network at once.
            results = await asyncio.gather(
                self.firewall.remove_network(bridge),
                self._thread(release_bridge_addresses, bridge, what="failed to delete bridge"),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                removal.close()
                raise failed[0]
            task = asyncio.ensure_future(removal)
            self._removing.add(task)
            task.add_done_callback(self._removed)
        del self._networks[network_id]

    async def create_endpoint(self, network_id: str, endpoint: EndpointSpec) -> EndpointInfo:
        net = self._network(network_id)
        if endpoint.endpoint_id in net.endpoints:
            raise errdefs.Conflict(f"endpoint {endpoint.endpoint_id} already exists")
        address = endpoint.address
        if address is None or address.network != net.config.subnet:
            raise errdefs.InvalidParameter(
                f"address {address} is not in the network's subnet {net.config.subnet}"
            )
        mac = endpoint.mac_address or mac_address(address.ip)
        # The veth pair itself is made by join, straight into the sandbox.
        host = f"veth{secrets.token_hex(4)[:7]}"
        info = EndpointInfo(network_id, endpoint.endpoint_id, address, mac, host)
        net.endpoints[endpoint.endpoint_id] = _Endpoint(info, address)
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
        net = self._network(network_id)
        ep = self._endpoint(net, endpoint_id)
        if ep.netns is not None:
            raise errdefs.Conflict(f"endpoint {endpoint_id} is already joined")
        gateway = net.config.gateway.ip if default_route and not net.spec.internal else None
        host = await self._thread(
            functools.partial(
                create_veth_in_sandbox,
                net.config.bridge,
                netns,
                ifname,
                ep.address,
                gateway,
                mac=ep.info.mac_address,
                mtu=net.config.mtu,
                host=ep.info.host_ifname,
                alias=self.link_alias,
            ),
            what="failed to join",
        )
        ep.info = dataclasses.replace(ep.info, host_ifname=host)
        ep.netns, ep.ifname, ep.made = netns, ifname, True
        return JoinInfo(ifname, gateway)

    async def leave(self, network_id: str, endpoint_id: str) -> None:
        net = self._network(network_id)
        ep = self._endpoint(net, endpoint_id)
        await self.unpublish_ports(network_id, endpoint_id)
        if ep.netns is not None:
            if not await self._thread(remove_from_sandbox, ep.netns, ep.ifname, what="failed to leave"):
                # The sandbox went first: its namespace takes the pair along, without the RCU grace
                # periods (about 25 ms here) that deleting a veth makes the caller wait for.
                ep.made = False
            ep.netns, ep.ifname = None, ""

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        net = self._network(network_id)
        ep = net.endpoints.get(endpoint_id)
        if ep is None:
            return
        await self.leave(network_id, endpoint_id)
        if ep.made:  # never joined: no link of that name is ours
            await self._thread(delete_veth, ep.info.host_ifname, what="failed to delete veth")
        del net.endpoints[endpoint_id]

    async def publish_ports(
        self, network_id: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> list[PortMapping]:
        net = self._network(network_id)
        ep = self._endpoint(net, endpoint_id)
        if net.spec.internal or not bindings:
            return []  # dockerd programs no external connectivity for internal networks
        mappings: list[PortMapping] = []
        try:
            for b in bindings:
                host_ip = _binding_address(b.host_ip, net.config.host_binding_ipv4)
                if host_ip is None:
                    continue  # an IPv6 binding: skiff's networks are IPv4 only, as dockerd's without --ipv6
                port = self.ports.allocate(b.proto, host_ip, b.host_port, b.host_port_end)
                mappings.append(PortMapping(b.proto, host_ip, port, ep.address.ip, b.container_port))
            await self.firewall.add_forwards([self._forward(net, m) for m in mappings])
        except BaseException:
            for m in mappings:
                self.ports.release(m.proto, m.host_ip, m.host_port)
            raise
        ep.mappings += mappings
        return mappings

    async def unpublish_ports(self, network_id: str, endpoint_id: str) -> None:
        net = self._network(network_id)
        ep = self._endpoint(net, endpoint_id)
        if not ep.mappings:
            return
        await self.firewall.remove_forwards([self._forward(net, m) for m in ep.mappings])
        for m in ep.mappings:
            self.ports.release(m.proto, m.host_ip, m.host_port)
        ep.mappings = []

    def _removed(self, task: asyncio.Task[None]) -> None:
        self._removing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("deleting a bridge failed: %s", task.exception())

    async def close(self) -> None:
        """Remove every bridge, veth, rule and port reservation this driver made. Best effort: one
        failure does not keep the rest in place; the first error is raised at the end."""
        errors: list[BaseException] = []
        for network_id, net in list(self._networks.items()):
            for endpoint_id in list(net.endpoints):
                try:
                    await self.delete_endpoint(network_id, endpoint_id)
                except errdefs.EngineError as e:
                    errors.append(e)
                    net.endpoints.pop(endpoint_id, None)
            try:
                await self.delete_network(network_id)
            except errdefs.EngineError as e:
                errors.append(e)
                self._networks.pop(network_id, None)
        await asyncio.gather(*self._removing, return_exceptions=True)
        try:
            await self.firewall.close()
        finally:
            self.ports.release_all()
        if errors:
            raise errors[0]

    def endpoint(self, network_id: str, endpoint_id: str) -> EndpointInfo:
        return self._endpoint(self._network(network_id), endpoint_id).info

    def bridge_name(self, network_id: str) -> str:
        return self._network(network_id).config.bridge

    @staticmethod
    def _forward(net: _Network, m: PortMapping) -> PortForward:
        return PortForward(
            net.config.bridge, m.proto, m.host_ip, m.host_port, m.container_ip, m.container_port
        )

    def _network(self, network_id: str) -> _Network:
        net = self._networks.get(network_id)
        if net is None:
            raise errdefs.NotFound(f"network {network_id} not found")
        return net

    @staticmethod
    def _endpoint(net: _Network, endpoint_id: str) -> _Endpoint:
        ep = net.endpoints.get(endpoint_id)
        if ep is None:
            raise errdefs.NotFound(f"endpoint {endpoint_id} not found")
        return ep

    @staticmethod
    async def _thread(fn: Callable[..., T], *args: Any, what: str) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except NetlinkError as e:
            raise _netlink(what, e) from None
        except OSError as e:
            raise errdefs.Internal(f"{what}: {e}") from None
