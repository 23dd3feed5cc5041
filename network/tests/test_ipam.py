"""IPAM: default pools, host-route avoidance, explicit subnets, ranges, gateways, addresses, rebuild."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import errdefs
from network.driver import mac_address
from network.ipam import (
    DEFAULT_ADDRESS_POOLS,
    AddressInUse,
    AddressOutOfRange,
    AddressPool,
    Ipam,
    NoAvailableAddresses,
    NoAvailablePool,
    PoolOverlap,
)


def nets(*texts: str) -> list[IPv4Network]:
    return [IPv4Network(t) for t in texts]


def test_default_pools_are_dockerds():
    subnets = [s for p in DEFAULT_ADDRESS_POOLS for s in p.subnets()]
    assert subnets[0] == IPv4Network("172.17.0.0/16")
    assert subnets[1] == IPv4Network("172.18.0.0/16")
    assert IPv4Network("172.31.0.0/16") in subnets
    assert subnets[15] == IPv4Network("192.168.0.0/20")
    assert subnets[-1] == IPv4Network("192.168.240.0/20")
    assert len(subnets) == 15 + 16


def test_first_networks_follow_dockerd():
    ipam = Ipam()
    bridge = ipam.request_pool()
    assert (bridge.subnet, bridge.gateway) == (IPv4Network("172.17.0.0/16"), IPv4Interface("172.17.0.1/16"))
    assert bridge.pool_id == "LocalDefault/172.17.0.0/16"
    assert ipam.request_pool().subnet == IPv4Network("172.18.0.0/16")


def test_automatic_subnets_skip_host_routes_and_addresses():
    # A docker0 on 172.17/16 and a VPN route over 172.18-19 are taken; 172.20/16 is next.
    ipam = Ipam(host_networks=lambda: nets("172.17.0.0/16", "172.18.0.0/15", "192.0.2.0/24"))
    assert ipam.request_pool().subnet == IPv4Network("172.20.0.0/16")


def test_host_networks_are_read_on_every_request():
    host: list[IPv4Network] = []
    ipam = Ipam(host_networks=lambda: host)
    first = ipam.request_pool()
    ipam.release_pool(first.pool_id)
    host.append(IPv4Network("172.17.5.0/24"))  # a route that appeared since
    assert ipam.request_pool().subnet == IPv4Network("172.18.0.0/16")


def test_explicit_subnet_ignores_host_routes_but_not_other_pools():
    ipam = Ipam(host_networks=lambda: nets("10.213.0.0/24"))
    pool = ipam.request_pool("10.213.0.0/24")  # what the user asked for, as dockerd allows
    assert pool.gateway == IPv4Interface("10.213.0.1/24")
    with pytest.raises(PoolOverlap) as e:
        ipam.request_pool("10.213.0.0/16")
    assert e.value.message == "Pool overlaps with other one on this address space"
    assert isinstance(e.value, errdefs.Forbidden)
    # Automatic pools avoid explicit ones too.
    ipam2 = Ipam()
    ipam2.request_pool("172.16.0.0/12")
    assert ipam2.request_pool().subnet == IPv4Network("192.168.0.0/20")


def test_subnet_with_host_bits_is_its_network():
    pool = Ipam().request_pool("10.214.240.5/24")
    assert pool.subnet == IPv4Network("10.214.240.0/24")
    assert pool.gateway.ip == IPv4Address("10.214.240.1")


def test_pool_exhaustion_has_dockerds_text():
    ipam = Ipam([AddressPool(IPv4Network("10.9.0.0/23"), 24)])
    ipam.request_pool()
    ipam.request_pool()
    with pytest.raises(NoAvailablePool) as e:
        ipam.request_pool()
    assert e.value.message == (
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network"
    )


def test_default_address_pool_flag():
    pool = AddressPool.parse("base=10.10.0.0/16,size=24")
    assert pool == AddressPool(IPv4Network("10.10.0.0/16"), 24)
    ipam = Ipam([pool])
    assert [ipam.request_pool().subnet for _ in range(2)] == nets("10.10.0.0/24", "10.10.1.0/24")
    for bad in ("base=10.10.0.0/16", "size=24", "base=x,size=24", "base=10.0.0.0/16,size=8", "foo"):
        with pytest.raises(errdefs.InvalidParameter):
            AddressPool.parse(bad)


def test_gateway_and_addresses_come_from_the_ip_range():
    # Measured on dockerd 20.10: --subnet 10.214.200.0/22 --ip-range 10.214.201.0/24 gives gateway
    # 10.214.201.0 and the first container 10.214.201.1; --ip outside the range but in the subnet works.
    ipam = Ipam()
    pool = ipam.request_pool("10.214.200.0/22", ip_range="10.214.201.0/24")
    assert pool.pool_id == "LocalDefault/10.214.200.0/22/10.214.201.0/24"
    assert pool.gateway == IPv4Interface("10.214.201.0/22")
    assert ipam.request_address(pool.pool_id) == IPv4Interface("10.214.201.1/22")
    assert ipam.request_address(pool.pool_id, "10.214.200.9") == IPv4Interface("10.214.200.9/22")


def test_gateway_errors_have_dockerds_text():
    ipam = Ipam()
    cases = {
        (
            "10.1.0.0/24",
            "10.2.0.1",
        ): "failed to allocate gateway (10.2.0.1): Requested address is out of range",
        ("10.1.0.0/24", "10.1.0.0"): "failed to allocate gateway (10.1.0.0): Address already in use",
        ("10.1.0.0/24", "10.1.0.255"): "failed to allocate gateway (10.1.0.255): Address already in use",
        ("10.1.0.0/31", None): "failed to allocate gateway (): No available addresses on this pool",
        ("10.1.0.0/32", None): "failed to allocate gateway (): No available addresses on this pool",
    }
    for (subnet, gateway), text in cases.items():
        with pytest.raises(errdefs.Internal) as e:
            ipam.request_pool(subnet, gateway=gateway)
        assert e.value.message == text
    assert ipam.pools() == []  # failures reserve nothing
    with pytest.raises(errdefs.Internal) as e:
        ipam.request_pool("10.1.0.0/33")
    assert e.value.message == "Invalid subnet 10.1.0.0/33 : invalid CIDR address: 10.1.0.0/33"
    with pytest.raises(errdefs.InvalidParameter):
        ipam.request_pool("10.1.0.0/24", ip_range="10.2.0.0/25")
    with pytest.raises(errdefs.InvalidParameter):
        ipam.request_pool("fd00::/64")


def test_explicit_gateway():
    ipam = Ipam()
    pool = ipam.request_pool("10.3.0.0/24", gateway="10.3.0.254")
    assert pool.gateway == IPv4Interface("10.3.0.254/24")
    assert ipam.request_address(pool.pool_id) == IPv4Interface("10.3.0.1/24")
    with pytest.raises(AddressInUse):
        ipam.request_address(pool.pool_id, "10.3.0.254")


def test_addresses_lowest_free_and_released():
    ipam = Ipam()
    pool = ipam.request_pool("10.4.0.0/29")  # .1 gateway, .2-.6 usable, .7 broadcast
    got = [ipam.request_address(pool.pool_id).ip for _ in range(5)]
    assert got == [IPv4Address(f"10.4.0.{i}") for i in range(2, 7)]
    with pytest.raises(NoAvailableAddresses):
        ipam.request_address(pool.pool_id)
    ipam.release_address(pool.pool_id, "10.4.0.3")
    assert ipam.request_address(pool.pool_id).ip == IPv4Address("10.4.0.3")


def test_static_address_errors():
    ipam = Ipam()
    pool = ipam.request_pool("10.5.0.0/24")
    ipam.request_address(pool.pool_id, "10.5.0.10")
    with pytest.raises(AddressInUse) as e:
        ipam.request_address(pool.pool_id, "10.5.0.10")
    assert e.value.message == "Address already in use"
    with pytest.raises(AddressOutOfRange) as e2:
        ipam.request_address(pool.pool_id, "10.6.0.10")
    assert e2.value.message == "Requested address is out of range"
    for reserved in ("10.5.0.0", "10.5.0.255", "10.5.0.1"):
        with pytest.raises(AddressInUse):
            ipam.request_address(pool.pool_id, reserved)
    with pytest.raises(errdefs.NotFound):
        ipam.request_address("LocalDefault/10.99.0.0/24")


def test_release_pool_frees_the_subnet():
    ipam = Ipam()
    pool = ipam.request_pool("10.7.0.0/24")
    ipam.release_pool(pool.pool_id)
    assert ipam.request_pool("10.7.0.0/16").subnet == IPv4Network("10.7.0.0/16")
    with pytest.raises(errdefs.NotFound):
        ipam.release_pool(pool.pool_id)


def test_state_rebuilt_from_stored_networks_and_endpoints():
    """What the networks service does at start-up: explicit pools first, then endpoint addresses."""
    before = Ipam()
    net = before.request_pool()
    addrs = [before.request_address(net.pool_id) for _ in range(3)]
    before.release_address(net.pool_id, addrs[1].ip)
    kept = [addrs[0], addrs[2]]

    after = Ipam()
    restored = after.request_pool(str(net.subnet), gateway=str(net.gateway.ip))
    assert restored == net
    for a in kept:
        assert after.request_address(restored.pool_id, a.ip) == a
    assert after.request_address(restored.pool_id) == addrs[1]
    assert after.request_pool().subnet == IPv4Network("172.18.0.0/16")


def test_mac_address_from_ip():
    assert mac_address(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert mac_address(IPv4Address("10.214.241.3")) == "02:42:0a:d6:f1:03"


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.integers(min_value=24, max_value=30),
    picks=st.lists(st.integers(min_value=0, max_value=300), max_size=40),
)
def test_addresses_are_unique_usable_and_in_the_subnet(prefix: int, picks: list[int]):
    ipam = Ipam()
    pool = ipam.request_pool(f"10.8.0.0/{prefix}")
    seen = {pool.gateway.ip}
    for pick in picks:
        if pick % 3 == 0 and len(seen) > 1:  # release something now and then
            victim = sorted(seen - {pool.gateway.ip})[pick % (len(seen) - 1)]
            ipam.release_address(pool.pool_id, victim)
            seen.discard(victim)
            continue
        try:
            got = ipam.request_address(pool.pool_id).ip
        except NoAvailableAddresses:
            assert len(seen) == pool.subnet.num_addresses - 2
            continue
        assert got in pool.subnet
        assert got not in (pool.subnet.network_address, pool.subnet.broadcast_address)
        assert got not in seen
        seen.add(got)
