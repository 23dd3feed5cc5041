"""BridgeDriver on the real host (root only): bridges, veths, sandboxes, rules, published ports.

Traffic stays between the host and namespaces these tests make; the REJECT rule of ``env`` keeps
the test bridges from forwarding to the default-route interface. Whether bridged traffic really
passes a FORWARD policy of DROP, and isolation with forwarding on, are checked in a namespace of
its own (test_forwarding.py), since the host's forwarding settings are not ours to change.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface

import pytest
from pyroute2 import IPRoute

import network.bridge
import network.links
from engine import errdefs
from network.bridge import MTU, BridgeConfig, BridgeDriver
from network.driver import EndpointSpec, NetworkSpec
from network.firewall import Chains, CommandResult, Firewall
from network.portmap import PortAllocatedError, PortAllocator, PortBinding
from network.tests.conftest import Env
from network.tests.nettools import in_netns, iptables_lines, links, ping, tcp_fetch, tcp_server

pytestmark = [pytest.mark.privileged, pytest.mark.anyio]


def sandbox_view(ipr: IPRoute) -> object:
    (idx,) = ipr.link_lookup(ifname="eth0")
    eth0 = ipr.get_links(idx)[0]
    addrs = [f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx)]  # no inet6 either
    default = [r.get("gateway") for r in ipr.get_default_routes(family=socket.AF_INET)]
    return eth0.get("address"), eth0.get("mtu"), eth0.get("state"), addrs, default


def bridge_view(name: str) -> tuple[set[str], int, list[str]]:
    with IPRoute() as ipr:
        (br,) = ipr.link_lookup(ifname=name)
        ports = {str(x.get("ifname")) for x in ipr.get_links() if x.get("master") == br}
        addrs = [
            f"{x.get('address')}/{x['prefixlen']}" for x in ipr.get_addr(index=br, family=socket.AF_INET)
        ]
        return ports, int(ipr.get_links(br)[0].get("mtu")), addrs


async def test_two_sandboxes_on_one_bridge_talk(env: Env):
    net = await env.add_network(options={MTU: "1400"})
    a_ns, a = await env.add_container(net, "a")
    b_ns, b = await env.add_container(net, "b")
    assert net.gateway is not None and a.address is not None and b.address is not None
    assert a.address.ip == net.gateway.ip + 1  # the lowest free address after the gateway
    assert a.mac_address == "02:42:" + ":".join(f"{x:02x}" for x in a.address.ip.packed)

    assert in_netns(a_ns, sandbox_view) == (
        a.mac_address,
        1400,
        "up",
        [str(a.address)],
        [str(net.gateway.ip)],
    )
    bridge = links()[env.tag.bridge(1)]
    assert bridge[0] == "bridge"
    assert await asyncio.to_thread(bridge_view, env.tag.bridge(1)) == (
        {a.host_ifname, b.host_ifname},
        1400,
        [str(net.gateway)],
    )
    with open(f"/sys/class/net/{a.host_ifname}/brport/hairpin_mode", encoding="ascii") as f:
        assert f.read().strip() == "1"

    assert ping(a_ns, b.address.ip)
    assert ping(b_ns, net.gateway.ip)
    server, port = tcp_server(b_ns, b"hello from b")
    with server:
        assert tcp_fetch(a_ns, b.address.ip, port) == b"hello from b"
        assert tcp_fetch(None, b.address.ip, port) == b"hello from b"  # the host reaches it too

    # leave + delete_endpoint remove both veth ends; the sandbox keeps only lo.
    await env.driver.leave(net.network_id, a.endpoint_id)
    await env.driver.delete_endpoint(net.network_id, a.endpoint_id)
    assert a.host_ifname not in links()
    assert in_netns(a_ns, lambda ipr: [x.get("ifname") for x in ipr.get_links()]) == ["lo"]


async def test_rules_of_a_network_and_internal_networks(env: Env):
    pub = await env.add_network()
    internal = await env.add_network(internal=True)
    d_ns, d = await env.add_container(internal, "d")
    _, e = await env.add_container(internal, "e")
    assert d.address is not None and e.address is not None
    # No way out of an internal network: no default route, and isolation rules both ways.
    assert in_netns(d_ns, lambda ipr: list(ipr.get_default_routes(family=socket.AF_INET))) == []
    assert ping(d_ns, e.address.ip)
    prefix, br1, br2 = env.tag.chains.prefix, env.tag.bridge(1), env.tag.bridge(2)
    rules = iptables_lines()
    for line in (
        f"filter: -A FORWARD -j {prefix}-USER",
        f"filter: -A {prefix}-FORWARD -i {br1} ! -o {br1} -j ACCEPT",
        f"filter: -A {prefix}-ISOLATION-STAGE-2 -o {br1} -j DROP",
        f"filter: -A {prefix}-ISOLATION-STAGE-1 ! -s {internal.subnet} -o {br2} -j DROP",
        f"nat: -A {prefix}-POSTROUTING -s {pub.subnet} ! -o {br1} -j MASQUERADE",
        f"nat: -A OUTPUT -m addrtype --dst-type LOCAL -j {prefix}",
    ):
        assert line in rules
    assert not any(f"! -o {br2} -j MASQUERADE" in line for line in rules)
    if env.outside:
        # The test's REJECT sits above skiff's jumps in FORWARD.
        forward = [ln for ln in rules if ln.startswith("filter: -A FORWARD ")]
        mine = [i for i, ln in enumerate(forward) if env.tag.comment in ln or prefix in ln]
        assert env.tag.comment in forward[mine[0]]
    with open(f"/proc/sys/net/ipv4/conf/{br1}/route_localnet", encoding="ascii") as f:
        assert f.read().strip() == "1"
    # Deleting a network removes its rules, not the others'.
    with pytest.raises(errdefs.Forbidden):
        await env.driver.delete_network(internal.network_id)
    for ep in (d, e):
        await env.driver.delete_endpoint(internal.network_id, ep.endpoint_id)
    await env.driver.delete_network(internal.network_id)
    await env.driver.firewall.settle()  # rules are deleted in the background
    rules = iptables_lines()
    assert not any(br2 in line for line in rules)
    assert any(br1 in line for line in rules)
    assert env.tag.bridge(2) not in links()


async def test_published_ports_reach_the_sandbox_from_loopback(env: Env):
    net = await env.add_network()
    web_ns, web = await env.add_container(net, "web")
    server, _ = tcp_server(web_ns, b"published", port=80)
    with server:
        mappings = await env.driver.publish_ports(
            net.network_id,
            web.endpoint_id,
            [PortBinding(80, host_ip="127.0.0.1"), PortBinding(80), PortBinding(53, "udp")],
        )
        loop, anywhere, dns = mappings
        assert web.address is not None
        assert (loop.host_ip, loop.container_ip, loop.container_port) == (
            IPv4Address("127.0.0.1"),
            web.address.ip,
            80,
        )
        assert anywhere.host_ip == IPv4Address("0.0.0.0") and dns.proto == "udp"
        assert tcp_fetch(None, "127.0.0.1", loop.host_port) == b"published"
        assert tcp_fetch(None, "127.0.0.1", anywhere.host_port) == b"published"
        assert tcp_fetch(None, net.gateway.ip if net.gateway else "", anywhere.host_port) == b"published"

        # A published port is taken: the same host port again fails with dockerd's text, and nothing
        # of the failed request stays published.
        with pytest.raises(PortAllocatedError) as err:
            await env.driver.publish_ports(
                net.network_id,
                web.endpoint_id,
                [PortBinding(81), PortBinding(80, host_port=anywhere.host_port)],
            )
        assert err.value.message == f"Bind for 0.0.0.0:{anywhere.host_port} failed: port is already allocated"
        assert len(env.driver.ports.allocated()) == 3

        await env.driver.unpublish_ports(net.network_id, web.endpoint_id)
        assert env.driver.ports.allocated() == []
        await env.driver.firewall.settle()
        assert not any("DNAT" in line and env.tag.chains.prefix in line for line in iptables_lines())
        assert tcp_fetch(None, "127.0.0.1", loop.host_port, timeout=1) in (
            "ConnectionRefusedError",
            "TimeoutError",
        )


async def test_port_used_by_a_host_program_is_refused(env: Env):
    net = await env.add_network()
    _, web = await env.add_container(net, "web")
    busy = socket.create_server(("127.0.0.1", 0))
    with busy:
        port = busy.getsockname()[1]
        with pytest.raises(PortAllocatedError):
            await env.driver.publish_ports(
                net.network_id, web.endpoint_id, [PortBinding(80, host_ip="127.0.0.1", host_port=port)]
            )
    assert env.driver.ports.allocated() == []


async def test_static_address_second_interface_and_errors(env: Env):
    net1 = await env.add_network()
    net2 = await env.add_network()
    assert net1.subnet is not None and net2.subnet is not None
    ip = str(net1.subnet.network_address + 200)
    ns, first = await env.add_container(net1, "multi", ip=ip)
    assert first.address == IPv4Interface(f"{ip}/{net1.subnet.prefixlen}")
    # A second network joins as eth1, without a second default route.
    pool = env.pools[net2.network_id]
    addr = env.ipam.request_address(pool.pool_id)
    second = await env.driver.create_endpoint(net2.network_id, EndpointSpec("ep-multi-2", addr))
    with pytest.raises(errdefs.Conflict):
        await env.driver.join(net2.network_id, second.endpoint_id, ns)  # eth0 is taken
    info = await env.driver.join(net2.network_id, second.endpoint_id, ns, ifname="eth1", default_route=False)
    assert (info.ifname, info.gateway) == ("eth1", None)
    names = in_netns(ns, lambda ipr: sorted(str(x.get("ifname")) for x in ipr.get_links()))
    assert names == ["eth0", "eth1", "lo"]
    assert in_netns(ns, sandbox_view)[-1] == [str(net1.gateway.ip if net1.gateway else "")]
    # An explicit MAC address is kept.
    other = env.sandboxes.create(f"{env.tag.hex}-other")
    third = await env.driver.create_endpoint(
        net2.network_id,
        EndpointSpec("ep-multi-3", env.ipam.request_address(pool.pool_id), "02:42:00:00:00:33"),
    )
    await env.driver.join(net2.network_id, third.endpoint_id, other)
    assert in_netns(other, sandbox_view)[0] == "02:42:00:00:00:33"
    with pytest.raises(errdefs.InvalidParameter):
        await env.driver.create_endpoint(net1.network_id, EndpointSpec("x", IPv4Interface("192.0.2.9/24")))
    with pytest.raises(errdefs.Forbidden):  # two networks cannot share a bridge
        await env.driver.create_network(
            NetworkSpec(
                "f" * 64,
                net2.subnet,
                net2.gateway,
                options={"com.docker.network.bridge.name": env.tag.bridge(1)},
            )
        )


async def test_restart_adopts_a_crashed_bridge(env: Env):
    net = await env.add_network()
    await env.add_container(net, "a")
    _, b = await env.add_container(net, "b")
    # A crash: the daemon's memory is gone, the kernel state is not. A new driver adopts the bridge,
    # removes its stale veths and keeps working.
    stale = b.host_ifname
    env.driver = BridgeDriver(Firewall(chains=env.tag.chains), PortAllocator())
    await env.driver.create_network(net)
    assert stale not in links()
    assert (await asyncio.to_thread(bridge_view, env.tag.bridge(1)))[0] == set()
    c_ns, c = await env.add_container(net, "c")
    assert c.address is not None and ping(c_ns, net.gateway.ip if net.gateway else "")
    # A bridge that has another address is not ours to take.
    wrong = NetworkSpec(
        "e" * 64,
        net.subnet,
        IPv4Interface(f"{c.address.ip + 1}/{c.address.network.prefixlen}"),
        options={"com.docker.network.bridge.name": env.tag.bridge(1)},
    )
    with pytest.raises(errdefs.Forbidden, match="already has the address"):
        await BridgeDriver(Firewall(chains=env.tag.chains)).create_network(wrong)


def test_bridge_config_options():
    spec = NetworkSpec("a" * 64, None, None)
    with pytest.raises(errdefs.InvalidParameter):
        BridgeConfig.from_spec(spec)
    good = NetworkSpec("a" * 64, IPv4Interface("10.0.0.1/24").network, IPv4Interface("10.0.0.1/24"))
    config = BridgeConfig.from_spec(good)
    assert (config.bridge, config.mtu, config.icc, config.masquerade) == ("br-aaaaaaaaaaaa", 1500, True, True)
    for options in (
        {MTU: "abc"},
        {MTU: "10"},
        {"com.docker.network.bridge.name": "has space"},
        {"com.docker.network.bridge.enable_icc": "maybe"},
    ):
        with pytest.raises(errdefs.InvalidParameter):
            BridgeConfig.from_spec(NetworkSpec("a" * 64, good.subnet, good.gateway, options=options))


def owned_chain_rules(chains: Chains) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for table, chain in chains.owned():
        listing = subprocess.run(
            ["iptables", "-w", "-t", table, "-S", chain], capture_output=True, text=True, check=True
        ).stdout
        out[(table, chain)] = [ln for ln in listing.splitlines() if ln.startswith("-A ")]
    return out


def rendered_chain_rules(fw: Firewall) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {key: [] for key in fw.chains.owned()}
    table = ""
    for line in fw.render().splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith("-A "):
            out[(table, line.split()[1])].append(line)
    return out


async def test_added_bridges_and_ports_are_inserted_where_a_rewrite_puts_them(env: Env):
    """After the first bridge, adding bridges and published ports runs iptables-restore with
    insertions only (no chain is declared, so none is flushed), and the kernel's chains end up
    rule for rule as the full rendering has them; a removal deletes the rules that go."""
    fw = env.driver.firewall
    inputs: list[str] = []
    run = fw._run

    async def recording(argv: Sequence[str], stdin: bytes | None) -> CommandResult:
        if argv[0] == "iptables-restore":
            inputs.append((stdin or b"").decode())
        return await run(argv, stdin)

    fw._run = recording
    first = await env.add_network()
    inputs.clear()
    await env.add_network(internal=True)
    third = await env.add_network()
    _, web = await env.add_container(third, "web")
    _, db = await env.add_container(first, "db")
    await env.driver.publish_ports(
        third.network_id, web.endpoint_id, [PortBinding(80, host_ip="127.0.0.1"), PortBinding(53, "udp")]
    )
    await env.driver.publish_ports(first.network_id, db.endpoint_id, [PortBinding(5432)])
    assert len(inputs) == 4
    for text in inputs:
        changes = [ln for ln in text.splitlines() if ln not in ("*filter", "*nat", "COMMIT")]
        assert changes and all(ln.startswith("-I ") for ln in changes), text
    assert await asyncio.to_thread(owned_chain_rules, fw.chains) == rendered_chain_rules(fw)
    assert any("DNAT" in ln for ln in rendered_chain_rules(fw)[("nat", fw.chains.ports)])

    await env.driver.unpublish_ports(third.network_id, web.endpoint_id)
    await fw.settle()
    changes = [ln for ln in inputs[-1].splitlines() if ln not in ("*filter", "*nat", "COMMIT")]
    assert changes and all(ln.startswith("-D ") for ln in changes)  # deletions only, no rewrite
    assert await asyncio.to_thread(owned_chain_rules, fw.chains) == rendered_chain_rules(fw)
    await env.driver.publish_ports(third.network_id, web.endpoint_id, [PortBinding(8080)])
    assert await asyncio.to_thread(owned_chain_rules, fw.chains) == rendered_chain_rules(fw)


async def test_an_endpoint_whose_sandbox_went_first_goes_with_the_namespace(
    env: Env, monkeypatch: pytest.MonkeyPatch
):
    net = await env.add_network()
    ns, a = await env.add_container(net, "a")
    _, b = await env.add_container(net, "b")
    assert a.host_ifname in links()
    deleted: list[str] = []
    real = network.bridge.delete_veth
    monkeypatch.setattr(network.bridge, "delete_veth", lambda name: (deleted.append(name), real(name)))
    env.sandboxes.delete(ns.name)
    await env.driver.delete_endpoint(net.network_id, a.endpoint_id)
    assert deleted == []  # not by hand: the namespace takes it
    for _ in range(200):  # the kernel's namespace clean-up runs in a worker, soon after
        if a.host_ifname not in links():
            break
        await asyncio.sleep(0.025)
    assert a.host_ifname not in links()
    assert b.host_ifname in links()
    # A re-created endpoint of the same name and address joins a new sandbox.
    again = await env.driver.create_endpoint(net.network_id, EndpointSpec(a.endpoint_id, a.address))
    info = await env.driver.join(net.network_id, again.endpoint_id, env.sandboxes.create(f"{env.tag.hex}-a2"))
    assert info.ifname == "eth0"


async def test_a_bridge_named_after_its_network_frees_its_subnet_before_it_is_gone(env: Env):
    """br-<id> is deleted in the background (a netdev unregisters after RCU grace periods), but its
    addresses go before delete_network returns, its rules right after (``settle`` waits for them),
    and close waits for the link."""
    pool = env.ipam.request_pool()
    nid = f"{env.tag.hex}auto".ljust(64, "0")
    name = f"br-{nid[:12]}"
    try:
        await env.driver.create_network(NetworkSpec(nid, pool.subnet, pool.gateway))
        assert name in links()
        await env.driver.delete_network(nid)
        assert not await asyncio.to_thread(_addresses, name)
        routes = subprocess.run(
            ["ip", "-4", "route", "show", str(pool.subnet)], capture_output=True, text=True
        )
        assert name not in routes.stdout
        await env.driver.firewall.settle()
        assert not any(name in line for line in iptables_lines())
        await env.driver.close()
        assert name not in links()
    finally:
        await asyncio.to_thread(network.links.delete_bridge, name)


def _addresses(ifname: str) -> list[object]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        return list(ipr.get_addr(index=index[0])) if index else []
