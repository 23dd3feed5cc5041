"""A cautious host in miniature, run by test_forwarding.py inside ``unshare --net --mount``.

The private network namespace plays the host: FORWARD policy DROP, bridged frames through
iptables (br_netfilter), forwarding on, and an "outside" dummy interface carrying the default
route, with the REJECT rule test daemons use. The BridgeDriver then builds the default bridge, a
user network and an internal network there, and the scenario records what can reach what. It
prints one JSON object; everything it made dies with the namespaces when the process exits.

    python -m network.tests.forwarding_scenario <sandbox-root>
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from network.bridge import BRIDGE_NAME, BridgeDriver
from network.driver import EndpointInfo, EndpointSpec, NetworkSpec
from network.firewall import Firewall, outbound_reject_rule
from network.ipam import Ipam
from network.netlink import host_networks, off_loop
from network.portmap import PortAllocator, PortBinding
from network.sandbox import SandboxManager, run_in_netns
from network.tests.nettools import tcp_fetch, tcp_server

OUTSIDE = "198.51.100.1"  # the "host's" address towards the outside (TEST-NET-2)
ROUTER = "198.51.100.254"  # the "outside": one more namespace of this scenario


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@off_loop
def prepare_host(outside: Path) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.link("add", ifname="ext0", kind="veth", peer={"ifname": "ext0p"})
        (ext,) = ipr.link_lookup(ifname="ext0")
        ipr.addr("add", index=ext, address=OUTSIDE, prefixlen=24)
        ipr.link("set", index=ext, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="ext0p")[0], net_ns_fd=str(outside), ifname="eth0")
        ipr.route("add", dst="0.0.0.0/0", gateway=ROUTER, oif=ext)

    def router() -> None:
        with IPRoute() as inner:
            (idx,) = inner.link_lookup(ifname="eth0")
            inner.addr("add", index=idx, address=ROUTER, prefixlen=24)
            inner.link("set", index=idx, state="up")

    run_in_netns(outside, router)
    with open("/proc/sys/net/bridge/bridge-nf-call-iptables", "w", encoding="ascii") as f:
        f.write("1")
    sh("iptables", "-w", "-P", "FORWARD", "DROP")


@off_loop
def plain_bridge(sandboxes: SandboxManager) -> tuple[Path, Path]:
    """Two namespaces on a bridge skiff knows nothing about: the control for the DROP policy."""
    p1, p2 = sandboxes.create("ctl-1"), sandboxes.create("ctl-2")
    with IPRoute() as ipr:
        ipr.link("add", ifname="ctl0", kind="bridge")
        (br,) = ipr.link_lookup(ifname="ctl0")
        ipr.link("set", index=br, state="up")
        for n, ns in ((1, p1), (2, p2)):
            ipr.link("add", ifname=f"ctlh{n}", kind="veth", peer={"ifname": f"ctlp{n}"})
            ipr.link("set", index=ipr.link_lookup(ifname=f"ctlh{n}")[0], master=br, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname=f"ctlp{n}")[0], net_ns_fd=str(ns), ifname="eth0")

    def configure(ip: str) -> None:
        with IPRoute() as inner:
            (idx,) = inner.link_lookup(ifname="eth0")
            inner.addr("add", index=idx, address=ip, prefixlen=24)
            inner.link("set", index=idx, state="up")

    run_in_netns(p1, lambda: configure("192.168.99.1"))
    run_in_netns(p2, lambda: configure("192.168.99.2"))
    return p1, p2


async def scenario(root: Path) -> dict[str, Any]:
    sandboxes = SandboxManager(root)
    outside = sandboxes.create("outside")
    prepare_host(outside)
    out: dict[str, Any] = {}
    ctl1, ctl2 = plain_bridge(sandboxes)
    ctl_server, ctl_port = tcp_server(ctl2, b"ctl")
    out["control_plain_bridge"] = tcp_fetch(ctl1, "192.168.99.2", ctl_port, timeout=1)
    ctl_server.close()

    driver = BridgeDriver(Firewall(), PortAllocator(), ip_forward=True)
    ipam = Ipam(host_networks=host_networks)
    pools = {}

    async def network(name: str, **kw: Any) -> NetworkSpec:
        pool = ipam.request_pool()
        spec = NetworkSpec(name.ljust(64, "0"), pool.subnet, pool.gateway, **kw)
        await driver.create_network(spec)
        pools[spec.network_id] = pool
        return spec

    async def container(spec: NetworkSpec, name: str) -> tuple[Path, EndpointInfo]:
        ns = sandboxes.create(name)
        addr = ipam.request_address(pools[spec.network_id].pool_id)
        info = await driver.create_endpoint(spec.network_id, EndpointSpec(name, addr))
        await driver.join(spec.network_id, name, ns)
        return ns, info

    default = await network("bridge", options={BRIDGE_NAME: "skiff0"})
    user = await network("user")
    internal = await network("internal", internal=True)
    out["subnets"] = [str(s.subnet) for s in (default, user, internal)]
    out["ip_forward"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    reject = outbound_reject_rule("skiff0", "ext0", "skiff-test")
    sh("iptables", "-w", "-I", "FORWARD", "1", *reject)

    (a_ns, a), (b_ns, b) = await container(default, "a"), await container(default, "b")
    c_ns, c = await container(user, "c")
    (d_ns, _), (e_ns, e) = await container(internal, "d"), await container(internal, "e")
    servers = {
        name: tcp_server(ns, name.encode(), port=80)[0]
        for name, ns in (("a", a_ns), ("b", b_ns), ("c", c_ns), ("e", e_ns))
    }

    def ip(info: EndpointInfo) -> str:
        assert info.address is not None
        return str(info.address.ip)

    out["same_bridge"] = tcp_fetch(a_ns, ip(b), 80)
    out["host_to_container"] = tcp_fetch(None, ip(c), 80)
    out["default_to_user"] = tcp_fetch(a_ns, ip(c), 80, timeout=1)
    out["user_to_default"] = tcp_fetch(c_ns, ip(a), 80, timeout=1)
    out["internal_within"] = tcp_fetch(d_ns, ip(e), 80)
    out["internal_to_default"] = tcp_fetch(d_ns, ip(a), 80, timeout=1)
    out["default_to_internal"] = tcp_fetch(a_ns, ip(e), 80, timeout=1)
    far, far_port = tcp_server(outside, b"", echo_peer=True)
    out["outbound_rejected"] = tcp_fetch(a_ns, ROUTER, far_port, timeout=2)
    out["outbound_from_user_network"] = tcp_fetch(c_ns, ROUTER, far_port, timeout=2)  # masqueraded
    out["outbound_from_internal"] = tcp_fetch(d_ns, ROUTER, far_port, timeout=1)
    sh("iptables", "-w", "-D", "FORWARD", *reject)
    out["outbound_without_reject"] = tcp_fetch(a_ns, ROUTER, far_port, timeout=2)
    sh("iptables", "-w", "-I", "FORWARD", "1", *reject)
    far.close()

    (pb,) = await driver.publish_ports(default.network_id, "b", [PortBinding(80)])
    (pa,) = await driver.publish_ports(default.network_id, "a", [PortBinding(80, host_ip="127.0.0.1")])
    gw = str(default.gateway.ip) if default.gateway else ""
    out["published_loopback"] = tcp_fetch(None, "127.0.0.1", pb.host_port)
    out["published_outside_address"] = tcp_fetch(None, OUTSIDE, pb.host_port)
    out["published_only_on_loopback"] = tcp_fetch(None, OUTSIDE, pa.host_port, timeout=1)
    out["published_loopback_a"] = tcp_fetch(None, "127.0.0.1", pa.host_port)
    out["hairpin_other"] = tcp_fetch(a_ns, OUTSIDE, pb.host_port)
    out["hairpin_gateway"] = tcp_fetch(a_ns, gw, pb.host_port)
    out["hairpin_self"] = tcp_fetch(b_ns, OUTSIDE, pb.host_port)
    out["rules"] = sh("iptables-save")

    for s in servers.values():
        s.close()
    await driver.close()
    for name in sandboxes.list():
        if name != "outside":
            sandboxes.delete(name)
    out["rules_after"] = sh("iptables-save")
    out["links_after"] = sh("ip", "-o", "link", "show")
    return out


def main() -> None:
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    # The namespace files live on a tmpfs of this private mount namespace: gone with the process.
    subprocess.run(["mount", "-t", "tmpfs", "skiff-test", str(root)], check=True)
    result = asyncio.run(asyncio.wait_for(scenario(root), 60))
    print(json.dumps({k: v.decode() if isinstance(v, bytes) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
