"""NetworkService: the network objects of the Engine API (create, inspect, list, remove, prune,
connect, disconnect) over the IPAM and the network drivers.

The three pre-defined networks (``bridge`` on ``skiff0``, ``host``, ``none``) always exist; their IDs
are the ones ``engine.networkids`` keeps for the data root, so containers see the same IDs as
before networks were objects. Records are the only persistent state: at ``start`` every stored
network's pool is requested again from the IPAM (with the subnet it was given the first time) and
user-defined bridges are re-made by the driver; ``shutdown`` closes the drivers, which removes every
bridge, veth, address and iptables rule skiff made, so a stopped daemon leaves nothing in the
kernel (dockerd keeps its bridges; skiff's issue asks for a clean host instead).

Kernel objects of the default bridge are made lazily, with its first endpoint, because most daemons
(and every test daemon) never run a container on it. User-defined bridges are made at create time,
so a bad option or a clashing bridge name fails ``docker network create`` as on dockerd.

Endpoints are kept in memory (``Containers`` of inspect); they do not survive a daemon restart, as
the containers using them do not. Wiring them into container start is the containers service's job.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, Protocol

from engine import errdefs, ids
from engine.events import EventBus
from engine.networks.store import NetworkRecord, NetworkStore
from network.driver import EndpointInfo, EndpointSpec, JoinInfo, NetworkDriver, NetworkSpec
from network.ipam import Ipam, Pool
from network.portmap import PortBinding, PortMapping

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "skiff0"
PREDEFINED_DRIVERS = {"bridge": "bridge", "host": "host", "none": "null"}
_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
_PRUNE_FILTERS = ("label", "label!", "until")
_SWARM_DRIVERS = ("overlay",)


class ContainerRecords(Protocol):
    """What connect/disconnect need of the containers service (engine.containers.service)."""

    def get(self, ref: str) -> Any: ...

    def lock(self, cid: str) -> asyncio.Lock: ...

    def save(self, c: Any) -> None: ...


class RunningContainers(Protocol):
    """Endpoints of running containers (engine.networks.attach.ContainerNetworking)."""

    async def connect(self, c: Any, ref: str, cfg: Mapping[str, Any]) -> None: ...

    async def disconnect(self, c: Any, ref: str) -> None: ...


@dataclass
class Endpoint:
    container_id: str
    name: str  # the container's name without the leading "/"
    info: EndpointInfo
    pool_id: str | None
    # Network-scoped names the embedded DNS answers for besides ``name`` (aliases, the short ID).
    aliases: tuple[str, ...] = ()


@dataclass
class _Network:
    record: NetworkRecord
    pool: Pool | None = None
    kernel_ready: bool = False
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # by endpoint id


def go_rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    t = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{t}.{frac}Z" if frac else f"{t}Z"


def _until_ns(value: str) -> int:
    """``until`` of prune: a unix timestamp or a Go duration like ``24h`` / ``10m`` before now."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(h|m|s)", value)
    if m:
        secs = float(m.group(1)) * {"h": 3600, "m": 60, "s": 1}[m.group(2)]
        return time.time_ns() - int(secs * 1e9)
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise errdefs.InvalidParameter(f'failed to parse value as time or duration: "{value}"') from None


def _regex_match(patterns: Sequence[str], value: str) -> bool:
    for p in patterns:
        try:
            if re.search(p, value):
                return True
        except re.error:
            if p in value:
                return True
    return False


def _labels_match(wanted: Sequence[str], labels: Mapping[str, str]) -> bool:
    for value in wanted:
        key, has_value, want = value.partition("=")
        if key not in labels or (has_value and labels[key] != want):
            return False
    return True


def empty_endpoint_settings(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One entry of ``NetworkSettings.Networks`` as dockerd stores it before the container runs."""
    cfg = cfg or {}
    return {
        "IPAMConfig": cfg.get("IPAMConfig") or None, "Links": cfg.get("Links") or None,
        "Aliases": list(cfg.get("Aliases") or []) or None, "MacAddress": cfg.get("MacAddress") or "",
        "DriverOpts": cfg.get("DriverOpts") or None, "GwPriority": cfg.get("GwPriority") or 0,
        "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DNSNames": None,
    }  # fmt: skip


class NetworkService:
    def __init__(
        self,
        store: NetworkStore,
        drivers: Mapping[str, NetworkDriver],
        ipam: Ipam,
        events: EventBus,
        *,
        predefined_ids: Mapping[str, str],
        default_bridge_subnet: str | None = None,
        default_bridge_address: str | None = None,
        default_bridge_name: str | None = DEFAULT_BRIDGE,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.drivers = dict(drivers)
        self.ipam = ipam
        self.events = events
        self.predefined_ids = dict(predefined_ids)
        self.default_bridge_subnet = default_bridge_subnet
        self.default_bridge_address = default_bridge_address  # --bip's address; None: the IPAM's choice
        self.default_bridge_name = default_bridge_name  # None: -b none, no default bridge network
        self.clock = clock
        self.containers: ContainerRecords | None = None
        self.running: RunningContainers | None = None
        self._networks: dict[str, _Network] = {}
        self._lock = asyncio.Lock()
        # The default bridge's lazy pool and kernel objects: concurrent first users (two starts, a
        # start and "network ls") must not each request a pool or create the bridge.
        self._lazy_lock = asyncio.Lock()

    def set_containers(self, containers: ContainerRecords, running: RunningContainers | None = None) -> None:
        self.containers = containers
        self.running = running

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Reload records, make the pre-defined ones, re-request pools and re-make user bridges.
        A network that cannot be restored is logged and left out, never fatal to the daemon."""
        records = {r.id: r for r in await asyncio.to_thread(self.store.load_all)}
        for name, driver in PREDEFINED_DRIVERS.items():
            nid = self.predefined_ids[name]
            if name == "bridge" and self.default_bridge_name is None:
                records.pop(nid, None)  # -b none; the record stays on disk for a later start
                continue
            if nid not in records or (name == "bridge" and self._default_bridge_changed(records[nid])):
                record = self._predefined_record(name, driver, nid)
                records[nid] = record
        for record in sorted(records.values(), key=lambda r: (not r.predefined, r.created)):
            net = _Network(record)
            try:
                await self._restore(net)
            except Exception as e:  # one broken network must not keep the daemon from starting
                log.error("cannot restore network %s (%s): %s", record.name, record.id, e)
                continue
            self._networks[record.id] = net

    def _default_bridge_changed(self, record: NetworkRecord) -> bool:
        """dockerd re-makes its default bridge from the flags at every start: a changed -b or --bip
        replaces the stored record (an automatic subnet chosen earlier is kept otherwise)."""
        if record.options.get("com.docker.network.bridge.name") != self.default_bridge_name:
            return True
        if not self.default_bridge_subnet:
            return False
        stored = record.ipam_config[0] if record.ipam_config else {}
        return stored.get("Subnet") != self.default_bridge_subnet or bool(
            self.default_bridge_address and stored.get("Gateway") != self.default_bridge_address
        )

    def _predefined_record(self, name: str, driver: str, nid: str) -> NetworkRecord:
        options: dict[str, str] = {}
        config: list[dict[str, str]] = []
        if name == "bridge":
            options = {
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
                "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                "com.docker.network.bridge.name": self.default_bridge_name or DEFAULT_BRIDGE,
                "com.docker.network.driver.mtu": "1500",
            }
            if self.default_bridge_subnet:
                config = [{"Subnet": self.default_bridge_subnet}]
                if self.default_bridge_address:
                    config[0]["Gateway"] = self.default_bridge_address
        return NetworkRecord(
            id=nid,
            name=name,
            driver=driver,
            created=go_rfc3339_nano(self.clock()),
            options=options,
            ipam_config=config,
            predefined=True,
        )

    async def _restore(self, net: _Network) -> None:
        record = net.record
        if record.driver == "bridge":
            if record.predefined and not any(c.get("Subnet") for c in record.ipam_config):
                # Choosing a free subnet reads the host's routes (pyroute2, ~10 MiB); the default
                # bridge does it on first use instead (_ensure_pools), before any user network.
                await asyncio.to_thread(self.store.save, record)
                return
            net.pool = await self._request_pool(record.ipam_config)
        try:
            await asyncio.to_thread(self.store.save, record)
            if not record.predefined or record.driver != "bridge":
                await self._driver(record.driver).create_network(self._spec(net))
                net.kernel_ready = True
        except BaseException:
            if net.pool is not None:
                self.ipam.release_pool(net.pool.pool_id)
            raise

    async def shutdown(self) -> None:
        """Close every driver: each removes the bridges, veths, addresses and rules it made. Best
        effort: a driver that fails is logged and the others still close."""
        for driver in {id(d): d for d in self.drivers.values()}.values():
            try:
                await driver.close()
            except Exception as e:
                log.error("closing network driver %s: %s", driver.name, e)
        for net in self._networks.values():
            net.kernel_ready = False
            net.endpoints.clear()

    # ---- lookups ----------------------------------------------------------------------------

    def _driver(self, name: str) -> NetworkDriver:
        driver = self.drivers.get(name)
        if driver is None:
            raise errdefs.NotFound(f"could not find plugin {name} in v1 plugin registry: plugin not found")
        return driver

    def _find(self, ref: str) -> _Network:
        """dockerd's FindNetwork: full ID, then name, then a unique ID prefix."""
        if ref in self._networks:
            return self._networks[ref]
        for net in self._networks.values():
            if net.record.name == ref:
                return net
        if ref:
            matches = [n for nid, n in self._networks.items() if nid.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise errdefs.InvalidParameter(
                    f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
                )
        raise errdefs.NotFound(f"network {ref} not found")

    def network_id(self, ref: str) -> str:
        return self._find(ref).record.id

    def _spec(self, net: _Network) -> NetworkSpec:
        pool = net.pool
        return NetworkSpec(
            network_id=net.record.id,
            subnet=pool.subnet if pool else None,
            gateway=pool.gateway if pool else None,
            internal=net.record.internal,
            options=dict(net.record.options),
        )

    # ---- IPAM -------------------------------------------------------------------------------

    async def _ensure_pools(self) -> None:
        """Give the default bridge its automatic subnet, once, and record it."""
        async with self._lazy_lock:
            for net in self._networks.values():
                r = net.record
                if r.predefined and r.driver == "bridge" and net.pool is None:
                    pool = await self._request_pool(r.ipam_config)
                    r.ipam_config = [self._pool_config(pool, r.ipam_config)]
                    try:
                        await asyncio.to_thread(self.store.save, r)
                    except BaseException:
                        self.ipam.release_pool(pool.pool_id)
                        raise
                    net.pool = pool

    async def _request_pool(self, config: Sequence[Mapping[str, Any]]) -> Pool:
        if len(config) > 1:
            raise errdefs.InvalidParameter("skiff supports a single IPv4 IPAM config per network")
        entry = config[0] if config else {}
        return await asyncio.to_thread(
            self.ipam.request_pool,
            entry.get("Subnet") or None,
            entry.get("IPRange") or None,
            entry.get("Gateway") or None,
        )

    @staticmethod
    def _pool_config(pool: Pool, requested: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"Subnet": str(pool.subnet)}
        if pool.ip_range is not None:
            out["IPRange"] = str(pool.ip_range)
        out["Gateway"] = str(pool.gateway.ip)
        aux = requested[0].get("AuxiliaryAddresses") if requested else None
        if isinstance(aux, dict) and aux:
            out["AuxiliaryAddresses"] = aux
        return out

    # ---- views ------------------------------------------------------------------------------

    def _view(self, net: _Network, *, containers: bool = True) -> dict[str, Any]:
        r = net.record
        eps: dict[str, Any] = {}
        if containers:
            for ep_id, ep in net.endpoints.items():
                eps[ep.container_id] = {
                    "Name": ep.name,
                    "EndpointID": ep_id,
                    "MacAddress": ep.info.mac_address,
                    "IPv4Address": str(ep.info.address) if ep.info.address else "",
                    "IPv6Address": "",
                }
        return {
            "Name": r.name,
            "Id": r.id,
            "Created": r.created,
            "Scope": r.scope,
            "Driver": r.driver,
            "EnableIPv4": True,
            "EnableIPv6": r.enable_ipv6,
            "IPAM": {"Driver": r.ipam_driver, "Options": dict(r.ipam_options), "Config": list(r.ipam_config)},
            "Internal": r.internal,
            "Attachable": r.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": eps,
            "Options": dict(r.options),
            "Labels": dict(r.labels),
        }

    async def inspect(self, ref: str) -> dict[str, Any]:
        net = self._find(ref)
        await self._ensure_pools()
        return self._view(net)

    async def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        filters = dict(filters or {})
        for key in filters:
            if key not in _FILTERS:
                raise errdefs.InvalidParameter(f"invalid filter '{key}'")
        for t in filters.get("type", ()):
            if t not in ("custom", "builtin"):
                raise errdefs.InvalidParameter(f"invalid filter: 'type'='{t}'")
        dangling = _bool_filter(filters, "dangling")
        await self._ensure_pools()
        out = []
        for net in sorted(self._networks.values(), key=lambda n: n.record.created):
            r = net.record
            if filters.get("name") and not _regex_match(filters["name"], r.name):
                continue
            if filters.get("id") and not _regex_match(filters["id"], r.id):
                continue
            if filters.get("driver") and r.driver not in filters["driver"]:
                continue
            if filters.get("scope") and r.scope not in filters["scope"]:
                continue
            if filters.get("label") and not _labels_match(filters["label"], r.labels):
                continue
            if filters.get("type") and ("builtin" if r.predefined else "custom") not in filters["type"]:
                continue
            if dangling is not None and (dangling != (not r.predefined and not net.endpoints)):
                continue
            out.append(self._view(net, containers=False))
        return out

    # ---- create / remove / prune ------------------------------------------------------------

    async def create(
        self,
        name: str,
        driver: str | None = None,
        *,
        internal: bool = False,
        attachable: bool = False,
        enable_ipv6: bool = False,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        ipam_driver: str | None = None,
        ipam_config: Sequence[Mapping[str, Any]] | None = None,
        ipam_options: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        driver = driver or "bridge"
        if not name:
            raise errdefs.InvalidParameter("invalid name: name is empty")
        if name in PREDEFINED_DRIVERS:
            raise errdefs.Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver in _SWARM_DRIVERS:
            raise errdefs.Unavailable(
                'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
                "to connect this node to swarm and try again."
            )
        if driver in ("host", "null"):
            raise errdefs.Forbidden(f'only one instance of "{driver}" network is allowed')
        self._driver(driver)
        if ipam_driver not in (None, "", "default"):
            raise errdefs.NotFound(
                f"could not find plugin {ipam_driver} in v1 plugin registry: plugin not found"
            )
        if enable_ipv6:
            raise errdefs.InvalidParameter("IPv6 networks are not supported by skiff")
        config = [{k: v for k, v in dict(c).items() if v} for c in (ipam_config or ())]
        async with self._lock:
            await self._ensure_pools()
            if any(n.record.name == name for n in self._networks.values()):
                raise errdefs.Conflict(f"network with name {name} already exists")
            record = NetworkRecord(
                id=ids.new_id(),
                name=name,
                driver=driver,
                created=go_rfc3339_nano(self.clock()),
                internal=internal,
                attachable=attachable,
                labels=dict(labels or {}),
                options=dict(options or {}),
                ipam_options=dict(ipam_options or {}),
                ipam_config=config,
            )
            net = _Network(record)
            net.pool = await self._request_pool(config)
            try:
                record.ipam_config = [self._pool_config(net.pool, config)]
                await self._driver(driver).create_network(self._spec(net))
                try:
                    await asyncio.to_thread(self.store.save, record)
                except BaseException:
                    await self._driver(driver).delete_network(record.id)
                    raise
            except BaseException:
                self.ipam.release_pool(net.pool.pool_id)
                raise
            net.kernel_ready = True
            self._networks[record.id] = net
        self.events.publish("network", "create", record.id, {"name": name, "type": driver})
        return {"Id": record.id, "Warning": ""}

    async def remove(self, ref: str) -> None:
        async with self._lock:
            net = self._find(ref)
            await self._remove_locked(net)

    async def _remove_locked(self, net: _Network) -> None:
        r = net.record
        if r.predefined:
            raise errdefs.Forbidden(f"{r.name} is a pre-defined network and cannot be removed")
        if net.endpoints:
            # dockerd 28's text (libnetwork ActiveEndpointsError, a Forbidden: 403, as on 20.10).
            names = ", ".join(sorted(ep.name for ep in net.endpoints.values()))
            raise errdefs.Forbidden(
                f"error while removing network: network {r.name} has active endpoints ({names})"
            )
        if net.kernel_ready:
            await self._driver(r.driver).delete_network(r.id)
            net.kernel_ready = False
        await asyncio.to_thread(self.store.delete, r.id)
        if net.pool is not None:
            self.ipam.release_pool(net.pool.pool_id)
        del self._networks[r.id]
        self.events.publish("network", "destroy", r.id, {"name": r.name, "type": r.driver})

    async def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        filters = dict(filters or {})
        for key in filters:
            if key not in _PRUNE_FILTERS:
                raise errdefs.InvalidParameter(f"invalid filter '{key}'")
        until = [_until_ns(v) for v in filters.get("until", ())]
        deleted: list[str] = []
        async with self._lock:
            for net in list(self._networks.values()):
                r = net.record
                if r.predefined or net.endpoints:
                    continue
                if filters.get("label") and not _labels_match(filters["label"], r.labels):
                    continue
                if filters.get("label!") and any(_labels_match([v], r.labels) for v in filters["label!"]):
                    continue
                if until and not all(_created_ns(r.created) < u for u in until):
                    continue
                try:
                    await self._remove_locked(net)
                except errdefs.EngineError as e:
                    log.warning("prune: cannot remove network %s: %s", r.name, e.message)
                    continue
                deleted.append(r.name)
        self.events.publish("network", "prune", "", {"reclaimed": "0"})
        return {"NetworksDeleted": deleted or None}

    # ---- endpoints (used by container start in the wiring step) -----------------------------

    async def create_endpoint(
        self,
        ref: str,
        container_id: str,
        container_name: str,
        ip: str | None = None,
        aliases: Sequence[str] = (),
        mac: str | None = None,
    ) -> Endpoint:
        """Allocate an address and have the driver make the endpoint (not yet joined to a sandbox).
        The default bridge's kernel objects are made here, with its first endpoint."""
        net = self._find(ref)
        await self._ensure_pools()
        r = net.record
        async with self._lazy_lock:
            if not net.kernel_ready:
                await self._driver(r.driver).create_network(self._spec(net))
                net.kernel_ready = True
        address: IPv4Interface | None = None
        if net.pool is not None:
            try:
                address = await asyncio.to_thread(self.ipam.request_address, net.pool.pool_id, ip)
            except errdefs.Unavailable:
                raise errdefs.Unavailable(
                    f"no available IPv4 addresses on this network's address pools: {r.name} ({r.id})"
                ) from None
        endpoint_id = ids.new_id()
        try:
            info = await self._driver(r.driver).create_endpoint(
                r.id, EndpointSpec(endpoint_id, address, mac or None)
            )
        except BaseException:
            if address is not None and net.pool is not None:
                self.ipam.release_address(net.pool.pool_id, address.ip)
            raise
        ep = Endpoint(
            container_id,
            container_name.lstrip("/"),
            info,
            net.pool.pool_id if net.pool else None,
            tuple(aliases),
        )
        net.endpoints[endpoint_id] = ep
        return ep

    async def delete_endpoint(self, ref: str, endpoint_id: str) -> None:
        net = self._find(ref)
        ep = net.endpoints.get(endpoint_id)
        if ep is None:
            return
        await self._driver(net.record.driver).delete_endpoint(net.record.id, endpoint_id)
        del net.endpoints[endpoint_id]
        if ep.pool_id is not None and ep.info.address is not None:
            self.ipam.release_address(ep.pool_id, IPv4Address(ep.info.address.ip))

    async def join(
        self, ref: str, endpoint_id: str, netns: Path, *, ifname: str, default_route: bool
    ) -> JoinInfo:
        net = self._find(ref)
        return await self._driver(net.record.driver).join(
            net.record.id, endpoint_id, netns, ifname=ifname, default_route=default_route
        )

    async def publish_ports(
        self, ref: str, endpoint_id: str, bindings: Sequence[PortBinding]
    ) -> builtins.list[PortMapping]:
        net = self._find(ref)
        return await self._driver(net.record.driver).publish_ports(net.record.id, endpoint_id, bindings)

    def record(self, ref: str) -> NetworkRecord:
        return self._find(ref).record

    def gateway(self, ref: str) -> IPv4Interface | None:
        pool = self._find(ref).pool
        return pool.gateway if pool is not None else None

    def endpoints(self, ref: str) -> builtins.list[Endpoint]:
        return list(self._find(ref).endpoints.values())

    async def default_bridge_gateway(self) -> IPv4Address | None:
        """The address ``host-gateway`` stands for in ``--add-host`` (dockerd: the default bridge's)."""
        await self._ensure_pools()
        gw = self.gateway("bridge")
        return gw.ip if gw is not None else None

    # ---- connect / disconnect ---------------------------------------------------------------

    async def connect(self, ref: str, container_ref: str, endpoint_config: Mapping[str, Any] | None) -> None:
        net = self._find(ref)
        containers = self._containers()
        c = containers.get(container_ref)
        async with containers.lock(c.id):
            mode = str((c.host_config or {}).get("NetworkMode") or "bridge")
            cfg = dict(endpoint_config or {})
            _check_connect(mode, net.record, cfg)
            if c.state.running and self.running is not None:
                # The endpoint is made and joined now; its connect event comes from there.
                await self.running.connect(c, net.record.id, cfg)
                await asyncio.to_thread(containers.save, c)
                return
            settings = c.network_settings.setdefault("Networks", {})
            # dockerd 20.10 replaces the endpoint settings of a stopped container silently.
            settings[net.record.name] = {**empty_endpoint_settings(cfg), "NetworkID": net.record.id}
            # dockerd only records the config of a stopped container; "connect" comes at its start.
            await asyncio.to_thread(containers.save, c)

    async def disconnect(self, ref: str, container_ref: str, force: bool = False) -> None:
        net = self._find(ref)
        containers = self._containers()
        c = containers.get(container_ref)
        async with containers.lock(c.id):
            if c.state.running and self.running is not None:
                await self.running.disconnect(c, net.record.id)
                await asyncio.to_thread(containers.save, c)
                return
            settings = c.network_settings.get("Networks") or {}
            if net.record.name not in settings:
                raise errdefs.Forbidden(f"container {c.id} is not connected to network {net.record.name}")
            del settings[net.record.name]
            await asyncio.to_thread(containers.save, c)
        self.events.publish(
            "network",
            "disconnect",
            net.record.id,
            {"container": c.id, "name": net.record.name, "type": net.record.driver},
        )

    def _containers(self) -> ContainerRecords:
        if self.containers is None:
            raise errdefs.Internal("the containers service is not available")
        return self.containers


def _check_connect(mode: str, record: NetworkRecord, cfg: Mapping[str, Any]) -> None:
    """dockerd's runconfig conflicts for connecting a container to one more network."""
    if mode.startswith("container:"):
        raise errdefs.Forbidden(
            "container sharing network namespace with another container or host cannot be connected "
            "to any other network"
        )
    if "host" in (mode, record.driver):
        raise errdefs.Forbidden(
            "container cannot be disconnected from host network or connected to host network"
        )
    if mode == "none" or record.driver == "null":
        raise errdefs.Forbidden(
            "container cannot be connected to multiple networks with one of the networks in private "
            "(none) mode"
        )
    if record.predefined:
        ipam = cfg.get("IPAMConfig") or {}
        if isinstance(ipam, dict) and (ipam.get("IPv4Address") or ipam.get("IPv6Address")):
            raise errdefs.InvalidParameter(
                "user specified IP address is supported on user defined networks only"
            )
        if cfg.get("Aliases"):
            raise errdefs.InvalidParameter(
                "network-scoped alias is supported only for containers in user defined networks"
            )


def _bool_filter(filters: Mapping[str, Sequence[str]], key: str) -> bool | None:
    values = filters.get(key)
    if values is None:
        return None
    is_true = any(v.lower() in ("1", "true") for v in values)
    is_false = any(v.lower() in ("0", "false") for v in values)
    if is_true == is_false:
        raise errdefs.InvalidParameter(f"invalid filter '{key}'")
    return is_true


def _created_ns(created: str) -> int:
    base, _, rest = created.rstrip("Z").partition(".")
    secs = datetime.fromisoformat(base).replace(tzinfo=UTC).timestamp()
    return int(secs) * 1_000_000_000 + int((rest or "0").ljust(9, "0")[:9])
