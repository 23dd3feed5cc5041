"""Published ports: the records for ``-p``/``PortBindings`` and the host-port allocator.

Ports are published with iptables DNAT only (``network.firewall``), as dockerd does with
``--userland-proxy=false``: no proxy process per port. To keep dockerd's guarantees without a proxy,
the allocator holds a socket bound to each published host address and port (TCP also listening, as
docker-proxy would): a port some other program already uses fails with dockerd's error text, and
nothing else on the host can take the port while it is published. These sockets never see traffic,
because the DNAT rules in PREROUTING/OUTPUT rewrite every packet for the port first.

``-P`` and ``HostPort: ""`` take ports from the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), round-robin as dockerd's portallocator does, skipping ports that
are in use on the host.
"""

from __future__ import annotations

import errno
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from engine import errdefs

PROTOCOLS = ("tcp", "udp", "sctp")
ANY_ADDRESS = IPv4Address("0.0.0.0")
# dockerd's fallback when the kernel's range cannot be read.
DEFAULT_EPHEMERAL_RANGE = (49153, 65535)


class PortAllocatedError(errdefs.Internal):
    """dockerd's portallocator text; dockerd answers 500 (wrapped by the engine in
    ``driver failed programming external connectivity on endpoint <name> (<id>): ...``)."""

    def __init__(self, host_ip: IPv4Address, port: int) -> None:
        super().__init__(f"Bind for {host_ip}:{port} failed: port is already allocated")


@dataclass(frozen=True)
class PortBinding:
    """One requested binding. ``host_ip`` "" means the network's default binding address (0.0.0.0);
    ``host_port`` 0 means an ephemeral port; ``host_port_end`` > ``host_port`` means any free port of
    that range (the API's ``HostPort: "8000-8010"``)."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0

    @classmethod
    def from_api(cls, port: str, host_ip: str | None = None, host_port: str | None = None) -> PortBinding:
        """One entry of ``HostConfig.PortBindings``: key ``"80/tcp"``, value ``{"HostIp", "HostPort"}``."""
        (cstart, cend), proto = _split_proto(port)
        if cstart != cend:
            raise errdefs.InvalidParameter(f"invalid port specification: {port!r}")
        start, end = _port_range(host_port or "", allow_empty=True)
        return cls(cstart, proto, (host_ip or "").strip(), start, end if end != start else 0)


@dataclass(frozen=True)
class PortMapping:
    """A published port as ``NetworkSettings.Ports`` shows it and as the DNAT rule implements it."""

    proto: str
    host_ip: IPv4Address
    host_port: int
    container_ip: IPv4Address
    container_port: int


def parse_port_spec(spec: str) -> list[PortBinding]:
    """The CLI's ``-p [ip:][hostPort[-end]:]containerPort[-end][/proto]``; ranges of equal length pair up
    port by port, a host range with a single container port is a choice of one host port."""
    rest, proto = _split_proto_text(spec)
    host_ip = ""
    m = re.fullmatch(r"(?:(\[[^\]]*\]|[^:]*):)?(?:([^:]*):)?([^:]+)", rest)
    if m is None:
        raise errdefs.InvalidParameter(f"Invalid hostPort: {spec}")
    ip_part, host_part, container_part = m.groups()
    if host_part is None and ip_part is not None:
        host_part, ip_part = ip_part, None
    if ip_part:
        host_ip = ip_part.strip("[]")
        try:
            IPv4Address(host_ip)
        except ValueError:
            raise errdefs.InvalidParameter(f"Invalid ip address: {host_ip}") from None
    cstart, cend = _port_range(container_part, allow_empty=False)
    hstart, hend = _port_range(host_part or "", allow_empty=True)
    ccount = cend - cstart + 1
    if hstart == 0:
        return [PortBinding(p, proto, host_ip) for p in range(cstart, cend + 1)]
    hcount = hend - hstart + 1
    if ccount == hcount:
        return [PortBinding(cstart + i, proto, host_ip, hstart + i) for i in range(ccount)]
    if ccount == 1:
        return [PortBinding(cstart, proto, host_ip, hstart, hend)]
    raise errdefs.InvalidParameter(
        f"Invalid ranges specified for container and host Ports: {container_part} and {host_part}"
    )


def _split_proto_text(spec: str) -> tuple[str, str]:
    rest, sep, proto = spec.rpartition("/")
    if not sep:
        return spec, "tcp"
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise errdefs.InvalidParameter(f"Invalid proto: {proto}")
    return rest, proto


def _split_proto(port: str) -> tuple[tuple[int, int], str]:
    rest, proto = _split_proto_text(port)
    return _port_range(rest, allow_empty=False), proto


def _port_range(text: str, *, allow_empty: bool) -> tuple[int, int]:
    text = text.strip()
    if not text:
        if allow_empty:
            return 0, 0
        raise errdefs.InvalidParameter("No port specified: <empty>")
    start_s, sep, end_s = text.partition("-")
    try:
        start = int(start_s)
        end = int(end_s) if sep else start
    except ValueError:
        raise errdefs.InvalidParameter(f"Invalid containerPort: {text}") from None
    if not (0 < start <= 65535 and 0 < end <= 65535) or end < start:
        raise errdefs.InvalidParameter(f"Invalid port range: {text}")
    return start, end


def ephemeral_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def reserve_port(proto: str, host_ip: IPv4Address, port: int) -> socket.socket | None:
    """Bind (and for TCP listen on) the host port; SCTP is not reserved (often no kernel module)."""
    if proto == "sctp":
        return None
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        sock.bind((str(host_ip), port))
        if proto == "tcp":
            sock.listen(1)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortAllocatedError(host_ip, port) from None
        raise errdefs.Internal(
            f"Error starting userland proxy: listen {proto}4 {host_ip}:{port}: bind: {e.strerror.lower()}"
            if e.strerror
            else f"Error starting userland proxy: {e}"
        ) from None
    return sock


class PortAllocator:
    """Host ports per (protocol, address). ``reserve=False`` keeps the bookkeeping in memory only
    (for fakes and unit tests); a wildcard address conflicts with every specific one, as the
    kernel's bind rules make it do with ``reserve=True``."""

    def __init__(self, ephemeral: tuple[int, int] | None = None, *, reserve: bool = True) -> None:
        self.ephemeral = ephemeral or ephemeral_port_range()
        self._reserve = reserve
        self._ports: dict[tuple[str, IPv4Address, int], socket.socket | None] = {}
        self._last = self.ephemeral[0] - 1
        self._lock = threading.Lock()

    def allocate(self, proto: str, host_ip: IPv4Address, port: int = 0, port_end: int = 0) -> int:
        if proto not in PROTOCOLS:
            raise errdefs.InvalidParameter(f"Invalid proto: {proto}")
        with self._lock:
            if port and (not port_end or port_end == port):
                self._take(proto, host_ip, port)
                return port
            if port:
                candidates: Iterable[int] = range(port, port_end + 1)
            else:
                low, high = self.ephemeral
                span = high - low + 1
                candidates = (low + (self._last + 1 + i - low) % span for i in range(span))
            for candidate in candidates:
                try:
                    self._take(proto, host_ip, candidate)
                except PortAllocatedError:
                    continue
                if not port:
                    self._last = candidate
                return candidate
            raise errdefs.Internal("all ports are allocated")

    def release(self, proto: str, host_ip: IPv4Address, port: int) -> None:
        with self._lock:
            sock = self._ports.pop((proto, host_ip, port), None)
        if sock is not None:
            sock.close()

    def release_all(self) -> None:
        with self._lock:
            socks = list(self._ports.values())
            self._ports.clear()
        for sock in socks:
            if sock is not None:
                sock.close()

    def allocated(self) -> list[tuple[str, IPv4Address, int]]:
        with self._lock:
            return sorted(self._ports, key=lambda k: (k[0], int(k[1]), k[2]))

    def _take(self, proto: str, host_ip: IPv4Address, port: int) -> None:
        for other_proto, other_ip, other_port in self._ports:
            if (
                other_proto == proto
                and other_port == port
                and (other_ip == host_ip or ANY_ADDRESS in (other_ip, host_ip))
            ):
                raise PortAllocatedError(host_ip, port)
        sock = reserve_port(proto, host_ip, port) if self._reserve else None
        self._ports[(proto, host_ip, port)] = sock
