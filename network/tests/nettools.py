"""Helpers for privileged network tests: unique names, host snapshots, forced cleanup, probes.

Every name a test makes starts with ``skt`` (links) or ``SKT`` (iptables chains) plus a random
tag, and subnets come from a random /20 of 10.160.0.0/12 (away from the reference dockerd's
10.212.0.0/14), so concurrent test runs and running daemons never meet. The snapshot only looks
at what carries the tag, plus veths left without a bridge, so it can fail on a real leak but not
because another engine on the host is busy.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from engine import errdefs
from network.firewall import Chains
from network.ipam import AddressPool
from network.links import _delete_link, _link_index
from network.netlink import off_loop
from network.sandbox import delete_netns, run_in_netns


@dataclass
class Tag:
    """One test run's names: bridges ``skt<hex>N``, chains ``SKT<HEX>-...``, a /20 of subnets."""

    hex: str = field(default_factory=lambda: secrets.token_hex(3))
    pool: AddressPool = field(
        default_factory=lambda: AddressPool(
            IPv4Network(f"10.{160 + secrets.randbelow(16)}.{16 * secrets.randbelow(16)}.0/20"), 24
        )
    )
    veths: set[str] = field(default_factory=set)

    @property
    def chains(self) -> Chains:
        return Chains(f"SKT{self.hex.upper()}")

    @property
    def comment(self) -> str:
        return f"skt-{self.hex}"

    def bridge(self, n: int) -> str:
        return f"skt{self.hex}{n}"

    def owns_line(self, line: str) -> bool:
        if self.chains.prefix in line or f"skt{self.hex}" in line or self.comment in line:
            return True
        for token in line.replace(":", " ").split():
            try:
                if IPv4Address(token.split("/")[0]) in self.pool.base:
                    return True
            except ValueError:
                continue
        return False


def iptables_lines() -> list[str]:
    lines: list[str] = []
    for table in ("filter", "nat"):
        out = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=True
        ).stdout
        lines += [f"{table}: {ln}" for ln in out.splitlines() if ln and not ln.startswith("#")]
    return lines


@off_loop
def links() -> dict[str, tuple[str, int | None]]:
    """name -> (kind, master index)."""
    found: dict[str, tuple[str, int | None]] = {}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            found[str(link.get("ifname"))] = (str(link.get(("linkinfo", "kind")) or ""), link.get("master"))
    return found


@off_loop
def routes_within(base: IPv4Network) -> set[str]:
    found: set[str] = set()
    with IPRoute() as ipr:
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            dst = r.get("dst")
            if dst and IPv4Network(f"{dst}/{r['dst_len']}", strict=False).overlaps(base):
                found.add(f"{dst}/{r['dst_len']} oif {r.get('oif')}")
    return found


@dataclass(frozen=True)
class Snapshot:
    links: frozenset[str]
    routes: frozenset[str]
    rules: frozenset[str]
    mounts: frozenset[str]


@off_loop
def snapshot(tag: Tag, root: Path) -> Snapshot:
    ours = {n for n in links() if n.startswith(f"skt{tag.hex}") or n in tag.veths}
    our_routes = routes_within(tag.pool.base)
    rules = {ln for ln in iptables_lines() if tag.owns_line(ln)}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = {ln.split()[4] for ln in f if ln.split()[4].startswith(str(root))}
    return Snapshot(frozenset(ours), frozenset(our_routes), frozenset(rules), frozenset(mounts))


def orphan_veths(before: dict[str, tuple[str, int | None]]) -> set[str]:
    """veths that appeared and sit on no bridge; another engine's veth only looks like that for a
    moment while it is being plugged in, so only names that stay orphaned count."""
    suspects: set[str] | None = None
    for _ in range(4):
        now = {
            n
            for n, (kind, master) in links().items()
            if kind == "veth" and master is None and n not in before
        }
        suspects = now if suspects is None else suspects & now
        if not suspects:
            return set()
        time.sleep(0.2)
    return suspects or set()


@off_loop
def force_cleanup(tag: Tag, root: Path) -> None:
    """Last resort after a failed test: remove whatever carries the tag, ignoring errors."""
    with IPRoute() as ipr:
        for name in links():
            if name.startswith(f"skt{tag.hex}") or name in tag.veths:
                idx = ipr.link_lookup(ifname=name)
                if idx:
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=idx[0])
    for table in ("filter", "nat"):
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if (
                line.startswith("-A ")
                and tag.owns_line(line)
                and line.split()[1]
                in (
                    "FORWARD",
                    "PREROUTING",
                    "OUTPUT",
                    "POSTROUTING",
                )
            ):
                subprocess.run(["iptables", "-w", "-t", table, "-D", *line.split()[1:]], capture_output=True)
        for line in out.splitlines():
            if line.startswith(":") and line[1:].split()[0].startswith(tag.chains.prefix):
                chain = line[1:].split()[0]
                subprocess.run(["iptables", "-w", "-t", table, "-F", chain], capture_output=True)
        for line in out.splitlines():
            if line.startswith(":") and line[1:].split()[0].startswith(tag.chains.prefix):
                chain = line[1:].split()[0]
                subprocess.run(["iptables", "-w", "-t", table, "-X", chain], capture_output=True)
    if root.exists():
        for path in root.iterdir():
            delete_netns(path)


# ---- probes -------------------------------------------------------------------------------


def tcp_server(
    netns: Path | None, payload: bytes, port: int = 0, *, echo_peer: bool = False
) -> tuple[socket.socket, int]:
    """A listening socket made inside ``netns`` that answers every connection with ``payload``
    (or, with ``echo_peer``, with the client address it sees)."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(8)
        return s

    sock = run_in_netns(netns, make) if netns else make()
    sock.settimeout(0.2)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by the test
            with conn:
                conn.sendall(conn.getpeername()[0].encode() if echo_peer else payload)

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def tcp_fetch(netns: Path | None, ip: IPv4Address | str, port: int, timeout: float = 2.0) -> bytes | str:
    """What a client in ``netns`` (None: the host) reads from ip:port, or the error's class name."""

    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    sock = run_in_netns(netns, make) if netns else make()
    sock.settimeout(timeout)
    try:
        sock.connect((str(ip), port))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data
    except OSError as e:
        return type(e).__name__
    finally:
        sock.close()


def ping(netns: Path, ip: IPv4Address | str) -> bool:
    done = subprocess.run(
        ["nsenter", f"--net={netns}", "busybox", "ping", "-c", "1", "-W", "2", str(ip)],
        capture_output=True,
        timeout=10,
    )
    return done.returncode == 0


def in_netns(netns: Path, fn: Callable[[IPRoute], object]) -> object:
    def inner() -> object:
        with IPRoute() as ipr:
            return fn(ipr)

    return run_in_netns(netns, inner)


def create_veth(bridge: str, mac: str, mtu: int, alias: str | None = None) -> tuple[str, str]:
    """A veth pair with its host side up on ``bridge``, both sides in this namespace (a crash's
    leftover for the reconcile tests); returns (host name, peer name)."""
    with IPRoute() as ipr:
        master = _link_index(ipr, bridge)
        if master is None:
            raise errdefs.NotFound(f"bridge {bridge} does not exist")
        for _ in range(8):
            host, peer = f"veth{secrets.token_hex(4)[:7]}", f"veth{secrets.token_hex(4)[:7]}"
            try:
                ipr.link(
                    "add",
                    ifname=host,
                    kind="veth",
                    mtu=mtu,
                    peer={"ifname": peer, "address": mac, "mtu": mtu},
                )
                break
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
        else:
            raise errdefs.Internal("could not find a free veth name")
        try:
            index = _link_index(ipr, host)
            assert index is not None
            ipr.link("set", index=index, master=master, state="up", **({"ifalias": alias} if alias else {}))
            ipr.brport("set", index=index, mode=1)  # hairpin
        except BaseException:
            _delete_link(ipr, host)
            raise
        return host, peer
