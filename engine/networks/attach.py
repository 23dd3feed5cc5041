"""Containers on networks: the sandbox (network namespace), endpoints, published ports and embedded
DNS of every running container (libnetwork's sandbox/endpoint life cycle, driven by the engine).

At start the container gets a sandbox of its own under ``<exec_root>/netns`` (dockerd's SandboxKey),
made before the runtime creates the container so the process finds its interfaces ready: one
endpoint per network in ``NetworkSettings.Networks`` (the primary network, ``HostConfig.NetworkMode``,
first as eth0 with the default route, the others as eth1, eth2, ... without one), the published
ports on the first network that gives external connectivity (not ``--internal``), and, when any of
its networks is user-defined, an embedded DNS server on 127.0.0.11 inside the sandbox. At exit all
of it goes again: ports, endpoints (which frees the addresses), the resolver and the namespace,
while ``NetworkSettings`` keeps what dockerd keeps for a stopped container (SandboxID/Key, NetworkID,
aliases) and clears the rest. Nothing survives a daemon restart: ``start`` deletes every sandbox a
crashed daemon left behind.

Name resolution follows dockerd: a container resolves, on each user-defined network it is on, the
names, aliases and short IDs of the endpoints of that network and their ``<name>.<network>`` forms;
PTR answers give ``<name>.<network>``. Unknown names go only to upstream servers given explicitly
(the daemon's ``--dns`` and the container's own ``--dns``), never to the host's resolver; on
internal networks nothing is forwarded at all (SERVFAIL), as dockerd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Protocol

from engine import errdefs, ids
from engine.events import EventBus
from engine.networks.service import Endpoint, NetworkService, empty_endpoint_settings
from network.driver import mac_address
from network.portmap import PortBinding, PortMapping

log = logging.getLogger(__name__)

DNS_NAMESERVER = "127.0.0.11"


class Sandboxes(Protocol):
    """network.sandbox.SandboxManager (blocking calls; run in threads)."""

    def create(self, sandbox_id: str, *, ipv6: bool = False) -> Path: ...

    def delete(self, sandbox_id: str) -> None: ...

    def list(self) -> list[str]: ...


class Resolver(Protocol):
    async def start_in_netns(self, netns: Path) -> None: ...

    async def close(self) -> None: ...


# (lookup, reverse, upstream addresses) -> a resolver not yet serving.
ResolverFactory = Callable[
    [Callable[[str], Sequence[IPv4Address]], Callable[[IPv4Address], str | None], Sequence[str]], Resolver
]


def _dns_resolver(
    lookup: Callable[[str], Sequence[IPv4Address]],
    reverse: Callable[[IPv4Address], str | None],
    upstreams: Sequence[str],
) -> Resolver:
    from network.dns import EmbeddedResolver, Upstream

    resolver: Resolver = EmbeddedResolver(lookup, reverse, [Upstream(a) for a in upstreams])
    return resolver


def network_mode(host_config: Mapping[str, Any]) -> str:
    mode = str(host_config.get("NetworkMode") or "default")
    return "bridge" if mode == "default" else mode


def port_bindings(config: Mapping[str, Any], host_config: Mapping[str, Any]) -> list[PortBinding]:
    """``HostConfig.PortBindings`` plus, with ``PublishAllPorts`` (``-P``), an ephemeral host port for
    every exposed port that has no binding of its own."""
    out: list[PortBinding] = []
    bound = host_config.get("PortBindings") or {}
    for port, entries in bound.items():
        for entry in entries or [{}]:
            entry = entry or {}
            out.append(PortBinding.from_api(port, entry.get("HostIp"), entry.get("HostPort")))
    if host_config.get("PublishAllPorts"):
        for port in config.get("ExposedPorts") or {}:
            if port not in bound:
                out.append(PortBinding.from_api(port))
    return out


def ports_view(
    config: Mapping[str, Any], host_config: Mapping[str, Any], mappings: Sequence[PortMapping]
) -> dict[str, Any]:
    """``NetworkSettings.Ports``: every exposed or bound port, null when not published."""
    ports: dict[str, Any] = {}
    for port in [*(config.get("ExposedPorts") or {}), *(host_config.get("PortBindings") or {})]:
        key = port if "/" in port else f"{port}/tcp"
        ports.setdefault(key, None)
    for m in mappings:
        key = f"{m.container_port}/{m.proto}"
        bindings = ports.get(key) or []
        bindings.append({"HostIp": str(m.host_ip), "HostPort": str(m.host_port)})
        ports[key] = bindings
    return ports


@dataclass
class _Attachment:
    network_id: str
    network_name: str
    endpoint: Endpoint
    ifname: str


@dataclass
class _Sandbox:
    container_id: str
    sandbox_id: str
    path: Path
    attachments: dict[str, _Attachment] = field(default_factory=dict)  # by network id
    resolver: Resolver | None = None
    mappings: list[PortMapping] = field(default_factory=list)

    def next_ifname(self) -> str:
        used = {a.ifname for a in self.attachments.values()}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"


class ContainerNetworking:
    def __init__(
        self,
        networks: NetworkService,
        sandboxes: Sandboxes,
        events: EventBus,
        *,
        daemon_dns: Sequence[str] = (),
        resolver_factory: ResolverFactory = _dns_resolver,
    ) -> None:
        self.networks = networks
        self.sandboxes = sandboxes
        self.events = events
        self.daemon_dns = tuple(daemon_dns)
        self.resolver_factory = resolver_factory
        self._live: dict[str, _Sandbox] = {}  # by container id
        # Rewrites a running container's /etc/hosts and resolv.conf (set by the containers service).
        self.files_changed: Callable[[Any], Awaitable[None]] | None = None

    # ---- daemon life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """No live-restore: every sandbox on disk was left by a daemon that is gone."""
        for sid in await asyncio.to_thread(self.sandboxes.list):
            try:
                await asyncio.to_thread(self.sandboxes.delete, sid)
            except OSError as e:
                log.warning("cannot delete stale sandbox %s: %s", sid, e)

    # ---- create -----------------------------------------------------------------------------

    def create_settings(
        self, host_config: dict[str, Any], networking_config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate the networks of a new container and give its initial ``NetworkSettings``
        (dockerd's create: unknown networks are 404, network-scoped options need a user network)."""
        mode = network_mode(host_config)
        networks: dict[str, Any] = {}
        if not mode.startswith("container:"):
            endpoints = {
                ("bridge" if k == "default" else k): v
                for k, v in dict(networking_config.get("EndpointsConfig") or {}).items()
            }
            wanted = [mode, *(n for n in endpoints if n != mode)]
            if mode in ("host", "none") and len(wanted) > 1:
                raise errdefs.InvalidParameter(
                    "Container cannot be connected to network endpoints: " + ", ".join(wanted)
                )
            for ref in wanted:
                record = self.networks.record(ref)
                cfg = endpoints.get(ref) or {}
                _check_endpoint_config(record.predefined, cfg)
                networks[record.name] = empty_endpoint_settings(cfg)
        return {"Ports": {}, "Networks": networks, "SandboxID": "", "SandboxKey": ""}

    # ---- start / stop -----------------------------------------------------------------------

    async def setup(self, c: Any) -> Path | None:
        """Make the sandbox and every endpoint of ``c``; the netns path for its OCI spec (None for
        ``host`` and ``container:`` modes, which use another namespace). Undone on failure."""
        path = await self.create_sandbox(c)
        if path is not None:
            try:
                await self.wire(c)
            except BaseException:
                await self.teardown(c)
                raise
        return path

    async def create_sandbox(self, c: Any) -> Path | None:
        """Only the (empty) network namespace of ``c``, for its OCI spec: the runtime can create the
        container in it while ``wire`` fills it. None for ``host`` and ``container:`` modes."""
        mode = network_mode(c.host_config)
        if mode == "host" or mode.startswith("container:"):
            return None
        await self.teardown(c)  # a leftover of a previous run (restart after a failed cleanup)
        sandbox_id = ids.new_id()
        path = await asyncio.to_thread(self.sandboxes.create, sandbox_id[:12])
        self._live[c.id] = _Sandbox(c.id, sandbox_id, path)
        c.network_settings["SandboxID"], c.network_settings["SandboxKey"] = sandbox_id, str(path)
        return path

    async def wire(self, c: Any) -> None:
        """Every endpoint of ``c`` in the sandbox ``create_sandbox`` made, its ports and its DNS
        server. On failure what was made stays for ``teardown``: the runtime may be using the
        namespace meanwhile."""
        sb = self._live[c.id]
        settings = c.network_settings
        names = list((settings.get("Networks") or {}).keys())
        primary = names[0] if names else None
        for name in names:
            if name == "none":
                self.networks.record(name)  # the pre-defined none network: lo only
                continue
            await self._attach(c, sb, name, default_route=name == primary)
        bindings = port_bindings(c.config, c.host_config)
        if bindings:
            await self._publish(c, sb, bindings)
        settings["Ports"] = ports_view(c.config, c.host_config, sb.mappings)
        await self._start_dns(c, sb)

    async def teardown(self, c: Any) -> None:
        """Remove what ``setup`` made; best effort, every step is tried. Keeps dockerd's stopped view."""
        sb = self._live.pop(c.id, None)
        if sb is None:
            return
        if sb.resolver is not None:
            with contextlib.suppress(Exception):
                await sb.resolver.close()
        # The namespace first: the kernel then removes the veths with it, which costs less than
        # deleting each one inside the sandbox (the bridge driver knows a sandbox may be gone).
        try:
            await asyncio.to_thread(self.sandboxes.delete, sb.path.name)
        except OSError as e:
            log.warning("cannot delete sandbox of %s: %s", c.id[:12], e)
        for att in list(sb.attachments.values()):
            await self._detach(c, att)
        c.network_settings["Ports"] = {}

    def address_of(self, c: Any) -> str | None:
        """The container's address on its primary network (its /etc/hosts line), if any."""
        sb = self._live.get(c.id)
        if sb is None:
            return None
        for att in sb.attachments.values():
            if att.ifname == "eth0" and att.endpoint.info.address is not None:
                return str(att.endpoint.info.address.ip)
        return None

    def uses_embedded_dns(self, c: Any) -> bool:
        sb = self._live.get(c.id)
        return sb is not None and sb.resolver is not None

    def renamed(self, c: Any) -> None:
        sb = self._live.get(c.id)
        for att in sb.attachments.values() if sb is not None else ():
            att.endpoint.name = c.name.lstrip("/")

    def sandbox_path(self, c: Any) -> Path | None:
        sb = self._live.get(c.id)
        return sb.path if sb is not None else None

    # ---- connect / disconnect of a running container ----------------------------------------

    async def connect(self, c: Any, ref: str, cfg: Mapping[str, Any]) -> None:
        sb = self._live.get(c.id)
        if sb is None:
            raise errdefs.Conflict(f"container {c.id} is not running")
        record = self.networks.record(ref)
        if record.id in sb.attachments:
            raise errdefs.Forbidden(
                f"endpoint with name {c.name.lstrip('/')} already exists in network {record.name}"
            )
        c.network_settings.setdefault("Networks", {})[record.name] = empty_endpoint_settings(cfg)
        try:
            await self._attach(c, sb, record.name, default_route=False)
            if sb.resolver is None:
                await self._start_dns(c, sb)
        except BaseException:
            c.network_settings["Networks"].pop(record.name, None)
            raise
        if self.files_changed is not None:
            await self.files_changed(c)

    async def disconnect(self, c: Any, ref: str) -> None:
        sb = self._live.get(c.id)
        record = self.networks.record(ref)
        att = sb.attachments.get(record.id) if sb is not None else None
        if att is None:
            raise errdefs.Forbidden(f"container {c.id} is not connected to network {record.name}")
        await self._detach(c, att)
        c.network_settings.get("Networks", {}).pop(record.name, None)

    # ---- name resolution --------------------------------------------------------------------

    def lookup(self, container_id: str, name: str) -> list[IPv4Address]:
        sb = self._live.get(container_id)
        if sb is None:
            return []
        found: list[IPv4Address] = []
        for att in sb.attachments.values():
            record = self.networks.record(att.network_id)
            if record.predefined:
                continue
            suffix = "." + record.name.lower()
            short = name[: -len(suffix)] if name.endswith(suffix) else name
            for ep in self.networks.endpoints(att.network_id):
                if ep.info.address is None:
                    continue
                if short in _names(ep) or name in _names(ep):
                    ip = IPv4Address(ep.info.address.ip)
                    if ip not in found:
                        found.append(ip)
            if found:
                break  # dockerd answers from the first network (eth0 first) that knows the name
        return found

    def reverse(self, container_id: str, ip: IPv4Address) -> str | None:
        sb = self._live.get(container_id)
        if sb is None:
            return None
        for att in sb.attachments.values():
            record = self.networks.record(att.network_id)
            if record.predefined:
                continue
            for ep in self.networks.endpoints(att.network_id):
                if ep.info.address is not None and ep.info.address.ip == ip:
                    return f"{ep.name}.{record.name}"
        return None

    # ---- internals --------------------------------------------------------------------------

    async def _attach(self, c: Any, sb: _Sandbox, name: str, *, default_route: bool) -> None:
        record = self.networks.record(name)
        settings = c.network_settings["Networks"][name]
        ipam = settings.get("IPAMConfig") or {}
        aliases = list(settings.get("Aliases") or [])
        if not record.predefined and c.short_id not in aliases:
            aliases.append(c.short_id)  # dockerd adds the short ID at every connect
        async with AsyncExitStack() as undo:
            ep = await self.networks.create_endpoint(
                record.id,
                c.id,
                c.name,
                ip=(ipam.get("IPv4Address") or None) if isinstance(ipam, dict) else None,
                aliases=aliases if not record.predefined else (),
                mac=settings.get("MacAddress") or None,
            )
            undo.push_async_callback(self.networks.delete_endpoint, record.id, ep.info.endpoint_id)
            ifname = sb.next_ifname()
            joined = None
            if record.driver == "bridge":
                joined = await self.networks.join(
                    record.id, ep.info.endpoint_id, sb.path, ifname=ifname, default_route=default_route
                )
            sb.attachments[record.id] = _Attachment(record.id, record.name, ep, ifname)
            undo.pop_all()
        address = ep.info.address
        gateway = self.networks.gateway(record.id)
        settings.update(
            {
                "Aliases": aliases or None,
                "NetworkID": record.id,
                "EndpointID": ep.info.endpoint_id,
                "Gateway": str(gateway.ip) if gateway is not None and joined is not None else "",
                "IPAddress": str(address.ip) if address is not None else "",
                "IPPrefixLen": address.network.prefixlen if address is not None else 0,
                "MacAddress": ep.info.mac_address or (mac_address(address.ip) if address else ""),
                "DNSNames": None if record.predefined else [c.name.lstrip("/"), *aliases],
            }
        )
        self.events.publish(
            "network", "connect", record.id, {"container": c.id, "name": record.name, "type": record.driver}
        )

    async def _detach(self, c: Any, att: _Attachment) -> None:
        sb = self._live.get(c.id)
        try:
            await self.networks.delete_endpoint(att.network_id, att.endpoint.info.endpoint_id)
        except errdefs.EngineError as e:
            log.warning("cannot delete endpoint of %s on %s: %s", c.id[:12], att.network_name, e.message)
        if sb is not None:
            sb.attachments.pop(att.network_id, None)
            sb.mappings = [m for m in sb.mappings if m.container_ip != _ip(att.endpoint)]
        settings = (c.network_settings.get("Networks") or {}).get(att.network_name)
        if isinstance(settings, dict):
            _clear_endpoint(settings)
        with contextlib.suppress(errdefs.NotFound):
            record = self.networks.record(att.network_id)
            self.events.publish(
                "network",
                "disconnect",
                record.id,
                {"container": c.id, "name": record.name, "type": record.driver},
            )

    async def _publish(self, c: Any, sb: _Sandbox, bindings: Sequence[PortBinding]) -> None:
        for att in sb.attachments.values():
            record = self.networks.record(att.network_id)
            if record.driver != "bridge" or record.internal:
                continue
            try:
                sb.mappings = await self.networks.publish_ports(
                    record.id, att.endpoint.info.endpoint_id, bindings
                )
            except errdefs.EngineError as e:
                raise errdefs.Internal(
                    f"driver failed programming external connectivity on endpoint {c.name.lstrip('/')} "
                    f"({att.endpoint.info.endpoint_id}): {e.message}"
                ) from None
            return

    async def _start_dns(self, c: Any, sb: _Sandbox) -> None:
        user_nets = [self.networks.record(a.network_id) for a in sb.attachments.values()]
        user_nets = [r for r in user_nets if not r.predefined]
        if not user_nets:
            return
        upstreams: list[str] = []
        if not all(r.internal for r in user_nets):
            for addr in [*(c.host_config.get("Dns") or []), *self.daemon_dns]:
                with contextlib.suppress(ValueError):
                    if str(IPv4Address(addr)) not in upstreams:
                        upstreams.append(str(IPv4Address(addr)))
        cid = c.id
        resolver = self.resolver_factory(
            lambda name: self.lookup(cid, name), lambda ip: self.reverse(cid, ip), upstreams
        )
        await resolver.start_in_netns(sb.path)
        sb.resolver = resolver


def _clear_endpoint(settings: dict[str, Any]) -> None:
    """What dockerd keeps of an endpoint once the container stopped: its config and network ID."""
    keep = {
        k: settings.get(k)
        for k in ("IPAMConfig", "Links", "Aliases", "DriverOpts", "GwPriority", "NetworkID")
    }
    settings.update(empty_endpoint_settings())
    settings.update(keep)


def forget_endpoints(network_settings: dict[str, Any]) -> None:
    """A container found dead at daemon start: its endpoints went with the daemon that made them."""
    for settings in (network_settings.get("Networks") or {}).values():
        if isinstance(settings, dict):
            _clear_endpoint(settings)
    network_settings["Ports"] = {}


def _ip(ep: Endpoint) -> IPv4Address | None:
    return IPv4Address(ep.info.address.ip) if ep.info.address is not None else None


def _names(ep: Endpoint) -> Iterator[str]:
    yield ep.name.lower()
    for alias in ep.aliases:
        yield alias.lower()


def _check_endpoint_config(predefined: bool, cfg: Mapping[str, Any]) -> None:
    if not predefined:
        return
    ipam = cfg.get("IPAMConfig") or {}
    if isinstance(ipam, dict) and (ipam.get("IPv4Address") or ipam.get("IPv6Address")):
        raise errdefs.InvalidParameter("user specified IP address is supported on user defined networks only")
    if cfg.get("Aliases"):
        raise errdefs.InvalidParameter(
            "network-scoped alias is supported only for containers in user defined networks"
        )
