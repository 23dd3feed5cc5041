"""Link-level kernel work for the bridge driver, through pyroute2 (blocking; run in worker threads).

Bridges carry a fixed locally administered MAC (02:42:...), as dockerd's do, so the bridge's
address does not change as ports come and go. A joining endpoint's veth pair is made with its peer
already in the sandbox, under its final name and with the endpoint's MAC, and configured from a
thread inside the sandbox. Every function unwinds what it made if it fails.

With an ``alias``, bridges and host-side veths carry it as their interface alias (IFLA_IFALIAS,
``ip link`` shows it): that is how ``network.reconcile`` finds what a crashed daemon of the same
identity left, without touching links of another engine or another skiff daemon. The kernel takes
no alias when a link is created, so it is set in the first change after creation.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from engine import errdefs
from network.reconcile import ALIAS_PREFIX
from network.sandbox import is_netns, run_in_netns


def _random_mac() -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))


def _link_index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _delete_link(ipr: IPRoute, name: str) -> None:
    index = _link_index(ipr, name)
    if index is not None:
        try:
            ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise


def write_sysctl(key: str, value: str) -> None:
    with open(f"/proc/sys/{key.replace('.', '/')}", "w", encoding="ascii") as f:
        f.write(value)


def ensure_bridge(
    name: str, gw: IPv4Interface, mtu: int, *, route_localnet: bool, owner: str, alias: str | None = None
) -> None:
    """Create the bridge, or adopt one left by a crash (emptied of its stale veth ports).
    ``owner`` names the network in error messages."""
    with IPRoute() as ipr:
        index = _link_index(ipr, name)
        created = index is None
        try:
            if index is None:
                ipr.link("add", ifname=name, kind="bridge", address=_random_mac(), mtu=mtu)
                index = _link_index(ipr, name)
                assert index is not None
                if alias:
                    ipr.link("set", index=index, ifalias=alias)
            else:
                _check_adoptable(ipr, index, name, gw, owner, alias)
                for port in ipr.get_links():
                    if port.get("master") == index and str(port.get("ifname", "")).startswith("veth"):
                        ipr.link("del", index=port["index"])
                ipr.link("set", index=index, mtu=mtu, **({"ifalias": alias} if alias else {}))
            if not any(
                a.get("address") == str(gw.ip) and a["prefixlen"] == gw.network.prefixlen
                for a in ipr.get_addr(index=index, family=socket.AF_INET)
            ):
                ipr.addr(
                    "add",
                    index=index,
                    address=str(gw.ip),
                    prefixlen=gw.network.prefixlen,
                    broadcast=str(gw.network.broadcast_address),
                )
            if route_localnet:
                # Lets the OUTPUT DNAT send 127.0.0.1-sourced packets into the bridge (published on loopback).
                write_sysctl(f"net.ipv4.conf.{name}.route_localnet", "1")
            ipr.link("set", index=index, state="up")
        except BaseException:
            if created:
                _delete_link(ipr, name)
            raise


def _check_adoptable(
    ipr: IPRoute, index: int, name: str, gw: IPv4Interface, owner: str, alias: str | None
) -> None:
    link = ipr.get_links(index)[0]
    if link.get(("linkinfo", "kind")) != "bridge":
        raise errdefs.Forbidden(f"cannot create network {owner} ({name}): not a bridge device")
    # Adopting empties the bridge of its veths: never do that to another skiff daemon's bridge.
    theirs = str(link.get("ifalias") or "")
    if theirs.startswith(ALIAS_PREFIX) and theirs != alias:
        raise errdefs.Forbidden(
            f"cannot create network {owner} ({name}): the bridge belongs to another skiff daemon"
        )
    for a in ipr.get_addr(index=index, family=socket.AF_INET):
        if a.get("address") != str(gw.ip):
            raise errdefs.Forbidden(
                f"cannot create network {owner} ({name}): "
                f"the bridge already has the address {a.get('address')}/{a['prefixlen']}"
            )


def release_bridge_addresses(name: str) -> None:
    """Drop a bridge's addresses (and with them its subnet route) ahead of deleting it, so that
    the subnet is free on the host at once; a missing bridge is fine."""
    with IPRoute() as ipr:
        index = _link_index(ipr, name)
        if index is not None:
            ipr.flush_addr(index=index)


def delete_bridge(name: str) -> None:
    with IPRoute() as ipr:
        index = _link_index(ipr, name)
        if index is None:
            return
        for port in ipr.get_links():
            if port.get("master") == index and str(port.get("ifname", "")).startswith("veth"):
                _delete_link(ipr, str(port.get("ifname")))
        _delete_link(ipr, name)


def create_veth_in_sandbox(
    bridge: str,
    netns: Path,
    ifname: str,
    address: IPv4Interface,
    gateway: IPv4Address | None,
    *,
    mac: str,
    mtu: int,
    host: str,
    alias: str | None = None,
) -> str:
    """A veth pair whose peer is made inside the sandbox as ``ifname`` (with the endpoint's address,
    MAC and, given a gateway, the default route) and whose host side is up on ``bridge``; returns
    the host side's name (``host`` unless a link of that name exists already).

    Made there rather than moved there: moving a link to another namespace makes the kernel wait
    for an RCU grace period (18 ms on a loaded 2-core machine), creating it there does not. A
    name taken in the sandbox fails the creation as a whole (EEXIST), so nothing is left half-made.
    """
    with IPRoute() as ipr:
        master = _link_index(ipr, bridge)
        if master is None:
            raise errdefs.NotFound(f"bridge {bridge} does not exist")
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _ in range(8):
                try:
                    ipr.link(
                        "add",
                        ifname=host,
                        kind="veth",
                        mtu=mtu,
                        peer={"ifname": ifname, "address": mac, "mtu": mtu, "net_ns_fd": fd},
                    )
                    break
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise
                    if _link_index(ipr, host) is None:  # the name inside the sandbox is the taken one
                        raise errdefs.Conflict(f"interface {ifname} already exists in the sandbox") from None
                    host = f"veth{secrets.token_hex(4)[:7]}"
            else:
                raise errdefs.Internal("could not find a free veth name")
        finally:
            os.close(fd)
        try:
            index = _link_index(ipr, host)
            assert index is not None
            ipr.link("set", index=index, master=master, state="up", **({"ifalias": alias} if alias else {}))
            ipr.brport("set", index=index, mode=1)  # hairpin
            run_in_netns(netns, lambda: _configure(ifname, address, gateway))
        except BaseException:
            _delete_link(ipr, host)  # takes the peer in the sandbox with it
            raise
        return host


def _configure(ifname: str, address: IPv4Interface, gateway: IPv4Address | None) -> None:
    """In the sandbox: the address, the link up and the default route."""
    with IPRoute() as inner:
        idx = _link_index(inner, ifname)
        assert idx is not None
        inner.addr(
            "add",
            index=idx,
            address=str(address.ip),
            prefixlen=address.network.prefixlen,
            broadcast=str(address.network.broadcast_address),
        )
        inner.link("set", index=idx, state="up")
        if gateway is not None:
            inner.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=idx)


def remove_from_sandbox(netns: Path, ifname: str) -> bool:
    """False when the sandbox is gone already: the kernel destroys the veth pair with the
    namespace, in its own time (the namespace's clean-up runs in a kernel worker)."""
    if not is_netns(netns):
        return False

    def remove() -> None:
        with IPRoute() as inner:
            _delete_link(inner, ifname)

    run_in_netns(netns, remove)
    return True


def delete_veth(host: str) -> None:
    with IPRoute() as ipr:
        _delete_link(ipr, host)
