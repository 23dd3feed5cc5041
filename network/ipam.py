"""IPv4 address management: subnet pools for networks and addresses for endpoints (libnetwork's default IPAM).

Pure and in memory. Nothing here is persisted: the networks service rebuilds the state at start-up by
requesting every stored network's pool with its explicit subnet (and gateway) and then every stored
endpoint's address. Automatic subnets come from the default address pools (dockerd's list, or
``--default-address-pool``) and skip anything that overlaps another pool or a route/address already on
the host, read through the injected ``host_networks`` provider (``network.netlink.host_networks``).
An explicit ``--subnet`` is only checked against other pools, as dockerd does.

Allocation follows libnetwork 20.10: the network and broadcast addresses are never handed out, the
lowest free address wins, addresses without a preference come from the ip-range when there is one
(so is the gateway: ``--subnet 10.1.0.0/22 --ip-range 10.1.1.0/24`` gets gateway 10.1.1.0), while an
explicit address only has to lie in the subnet. Error texts and types are libnetwork's.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from engine import errdefs

LOCAL_ADDRESS_SPACE = "LocalDefault"


class PoolOverlap(errdefs.Forbidden):
    def __init__(self) -> None:
        super().__init__("Pool overlaps with other one on this address space")


class NoAvailablePool(errdefs.NotFound):
    def __init__(self) -> None:
        super().__init__(
            "could not find an available, non-overlapping IPv4 address pool among the defaults "
            "to assign to the network"
        )


class AddressInUse(errdefs.Forbidden):
    def __init__(self) -> None:
        super().__init__("Address already in use")


class NoAvailableAddresses(errdefs.Unavailable):
    """The engine rewrites this to dockerd's network-level text (``no available IPv4 addresses on ...``)."""

    def __init__(self) -> None:
        super().__init__("No available addresses on this pool")


class AddressOutOfRange(errdefs.InvalidParameter):
    def __init__(self) -> None:
        super().__init__("Requested address is out of range")


@dataclass(frozen=True)
class AddressPool:
    """One ``--default-address-pool``: ``base`` is cut into subnets of prefix length ``size``."""

    base: IPv4Network
    size: int

    def __post_init__(self) -> None:
        if not self.base.prefixlen <= self.size <= 32:
            raise errdefs.InvalidParameter(f"invalid pools size: {self.size}")

    @classmethod
    def parse(cls, flag: str) -> AddressPool:
        """``base=10.10.0.0/16,size=24`` as dockerd's ``--default-address-pool`` takes it."""
        fields: dict[str, str] = {}
        for part in flag.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip().lower() not in ("base", "size"):
                raise errdefs.InvalidParameter(f"invalid field '{part}' must be a key=value pair")
            fields[key.strip().lower()] = value.strip()
        if "base" not in fields or "size" not in fields:
            raise errdefs.InvalidParameter(f"invalid default address pool: {flag}")
        try:
            base = IPv4Network(fields["base"], strict=False)
            size = int(fields["size"])
        except ValueError as e:
            raise errdefs.InvalidParameter(f"invalid default address pool {flag}: {e}") from None
        return cls(base, size)

    def subnets(self) -> Iterator[IPv4Network]:
        return self.base.subnets(new_prefix=self.size)


# libnetwork ipamutils' local-scope defaults: /16s from 172.17 to 172.31, then /20s of 192.168/16.
DEFAULT_ADDRESS_POOLS: tuple[AddressPool, ...] = tuple(
    AddressPool(IPv4Network(base), size)
    for base, size in (
        ("172.17.0.0/16", 16),
        ("172.18.0.0/16", 16),
        ("172.19.0.0/16", 16),
        ("172.20.0.0/14", 16),
        ("172.24.0.0/14", 16),
        ("172.28.0.0/14", 16),
        ("192.168.0.0/16", 20),
    )
)


def no_host_networks() -> list[IPv4Network]:
    return []


@dataclass(frozen=True)
class Pool:
    """A network's allocation: ``pool_id`` is libnetwork's key (``LocalDefault/<subnet>[/<range>]``)."""

    pool_id: str
    subnet: IPv4Network
    ip_range: IPv4Network | None
    gateway: IPv4Interface


@dataclass
class _PoolState:
    pool: Pool
    first: int  # host ordinals (offset from the subnet address) handed out when no address is asked for
    last: int
    allocated: set[int] = field(default_factory=set)


def parse_subnet(value: str) -> IPv4Network:
    """dockerd keeps host bits (``10.1.2.5/24`` is the pool 10.1.2.0/24); bad input gets its 500 text."""
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise errdefs.Internal(f"Invalid subnet {value} : invalid CIDR address: {value}") from None
    if not isinstance(net, IPv4Network):
        raise errdefs.InvalidParameter(f"IPv6 subnets are not supported: {value}")
    return net


def parse_address(value: str) -> IPv4Address:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise errdefs.InvalidParameter(f"invalid IP address: {value}") from None
    if not isinstance(addr, IPv4Address):
        raise errdefs.InvalidParameter(f"IPv6 addresses are not supported: {value}")
    return addr


class Ipam:
    """Thread-safe: the networks service may call it from worker threads."""

    def __init__(
        self,
        default_pools: Iterable[AddressPool] = DEFAULT_ADDRESS_POOLS,
        host_networks: Callable[[], Iterable[IPv4Network]] = no_host_networks,
    ) -> None:
        self.default_pools = tuple(default_pools)
        self._host_networks = host_networks
        self._pools: dict[str, _PoolState] = {}
        self._lock = threading.Lock()

    def pools(self) -> list[Pool]:
        with self._lock:
            return [s.pool for s in self._pools.values()]

    def request_pool(
        self, subnet: str | None = None, ip_range: str | None = None, gateway: str | None = None
    ) -> Pool:
        """Reserve a subnet (the given one, or the first free default) and allocate its gateway address."""
        net = parse_subnet(subnet) if subnet else None
        rng: IPv4Network | None = None
        if ip_range:
            if net is None:
                raise errdefs.Internal("Invalid subnet  : invalid CIDR address: ")
            rng = parse_subnet(ip_range)
            if not rng.subnet_of(net):
                raise errdefs.InvalidParameter(f"no matching subnet for range {ip_range}")
        if gateway and net is None:
            raise errdefs.Internal("Invalid subnet  : invalid CIDR address: ")
        gw = parse_address(gateway) if gateway else None
        with self._lock:
            if net is None:
                net = self._free_default_subnet()
            elif any(s.pool.subnet.overlaps(net) for s in self._pools.values()):
                raise PoolOverlap()
            pool_id = f"{LOCAL_ADDRESS_SPACE}/{net}" + (f"/{rng}" if rng else "")
            first, last = _host_bounds(net, rng)
            state = _PoolState(
                Pool(pool_id, net, rng, IPv4Interface(f"{net.network_address}/{net.prefixlen}")), first, last
            )
            try:
                gw_addr = self._allocate(state, gw)
            except errdefs.EngineError as e:
                raise errdefs.Internal(f"failed to allocate gateway ({gateway or ''}): {e.message}") from None
            state.pool = Pool(pool_id, net, rng, IPv4Interface(f"{gw_addr}/{net.prefixlen}"))
            self._pools[pool_id] = state
            return state.pool

    def release_pool(self, pool_id: str) -> None:
        with self._lock:
            if self._pools.pop(pool_id, None) is None:
                raise errdefs.NotFound(f"cannot find address pool for poolID:{pool_id}")

    def request_address(self, pool_id: str, ip: str | IPv4Address | None = None) -> IPv4Interface:
        """An endpoint address with the subnet's prefix length: the given one, or the lowest free."""
        want = parse_address(ip) if isinstance(ip, str) else ip
        with self._lock:
            state = self._state(pool_id)
            addr = self._allocate(state, want)
            return IPv4Interface(f"{addr}/{state.pool.subnet.prefixlen}")

    def release_address(self, pool_id: str, ip: str | IPv4Address) -> None:
        addr = parse_address(ip) if isinstance(ip, str) else ip
        with self._lock:
            state = self._state(pool_id)
            if addr not in state.pool.subnet:
                raise AddressOutOfRange()
            state.allocated.discard(int(addr) - int(state.pool.subnet.network_address))

    def _state(self, pool_id: str) -> _PoolState:
        state = self._pools.get(pool_id)
        if state is None:
            raise errdefs.NotFound(f"cannot find address pool for poolID:{pool_id}")
        return state

    def _free_default_subnet(self) -> IPv4Network:
        taken = [s.pool.subnet for s in self._pools.values()]
        host = list(self._host_networks())
        for pool in self.default_pools:
            for candidate in pool.subnets():
                if not any(candidate.overlaps(t) for t in taken) and not any(
                    candidate.overlaps(h) for h in host
                ):
                    return candidate
        raise NoAvailablePool()

    @staticmethod
    def _allocate(state: _PoolState, want: IPv4Address | None) -> IPv4Address:
        subnet = state.pool.subnet
        base = int(subnet.network_address)
        if want is not None:
            if want not in subnet:
                raise AddressOutOfRange()
            ordinal = int(want) - base
            if ordinal in state.allocated or not _usable(subnet, ordinal):
                raise AddressInUse()
        else:
            ordinal = next(
                (o for o in range(state.first, state.last + 1) if o not in state.allocated),
                -1,
            )
            if ordinal < 0:
                raise NoAvailableAddresses()
        state.allocated.add(ordinal)
        return IPv4Address(base + ordinal)


def _usable(subnet: IPv4Network, ordinal: int) -> bool:
    # libnetwork marks the network address and the broadcast address as taken in every IPv4 bitmask.
    return 0 < ordinal < subnet.num_addresses - 1


def _host_bounds(subnet: IPv4Network, ip_range: IPv4Network | None) -> tuple[int, int]:
    start, end = 1, subnet.num_addresses - 2
    if ip_range is not None:
        offset = int(ip_range.network_address) - int(subnet.network_address)
        start = max(start, offset)
        end = min(end, offset + ip_range.num_addresses - 1)
    return start, end
