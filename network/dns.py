"""Embedded DNS: the resolver dockerd serves on 127.0.0.11:53 inside each container on a user network.

It answers, from a table the engine supplies per sandbox, A queries for container names, network
aliases and ``<name>.<network>`` (``lookup``) and PTR queries for their addresses (``reverse``).
Everything else is forwarded only to the upstream servers it was given (the daemon's ``--dns``);
without any, or when none answers, the reply is an immediate SERVFAIL, which is what dockerd's
resolver sends when it cannot forward (e.g. on ``--internal`` networks). Nothing is ever sent to
the host's own resolver.

Listening: dockerd binds random ports inside the container's netns and DNATs port 53 to them with
iptables rules in that netns. Skiff binds 127.0.0.11:53 directly instead: the UDP and TCP sockets
are created by a short-lived thread that has joined the sandbox's namespace (``run_in_netns``),
then handed to this process's event loop. A socket belongs to the namespace it was created in,
so the loop serves the container's loopback without any thread living there and without NAT
rules to make and remove. Forwarding sockets are made by the loop, hence in the daemon's own
namespace, where the ``--dns`` servers are reachable.

Packets are parsed and built with dnslib. Names compare case-insensitively without the trailing
dot; answers carry dockerd's TTL of 600 s and the RA flag (dockerd sets it on every reply).
``lookup``/``reverse`` are called on the event loop and must be cheap in-memory look-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from dnslib import OPCODE, PTR, QTYPE, RCODE, RR, A, DNSError, DNSRecord

from network.sandbox import run_in_netns

log = logging.getLogger(__name__)

DNS_ADDRESS = "127.0.0.11"
DNS_PORT = 53
TTL = 600
MAX_CONCURRENT = 100
UPSTREAM_TIMEOUT = 2.0
TCP_IDLE_TIMEOUT = 10.0
_UDP_MAX = 65535

Lookup = Callable[[str], Sequence[IPv4Address]]
Reverse = Callable[[IPv4Address], str | None]


@dataclass(frozen=True)
class Upstream:
    """An upstream server from the daemon's ``--dns`` (port 53 unless given)."""

    address: str
    port: int = DNS_PORT


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


def ptr_address(name: str) -> IPv4Address | None:
    """The address of ``d.c.b.a.in-addr.arpa``, or None for any other name."""
    labels = normalize(name).split(".")
    if len(labels) != 6 or labels[4:] != ["in-addr", "arpa"]:
        return None
    try:
        return IPv4Address(".".join(reversed(labels[:4])))
    except ValueError:
        return None


def _reply(request: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    reply = request.reply(ra=1, aa=0)
    reply.header.rcode = rcode
    return reply


def answer_local(request: DNSRecord, lookup: Lookup, reverse: Reverse) -> DNSRecord | None:
    """The reply for a query skiff knows the answer to, or None when it is to be forwarded."""
    if request.header.opcode != OPCODE.QUERY:
        return _reply(request, RCODE.NOTIMP)
    if not request.questions:
        return _reply(request, RCODE.FORMERR)
    question = request.questions[0]
    qname = str(question.qname)
    if question.qtype in (QTYPE.A, QTYPE.AAAA):
        addresses = list(lookup(normalize(qname)))
        if not addresses:
            return None
        reply = _reply(request)
        # Containers have no IPv6 here: a known name gets an empty NOERROR for AAAA, as on dockerd,
        # so resolvers fall back to the A answer instead of asking upstream.
        if question.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(str(address)), ttl=TTL))
        return reply
    if question.qtype == QTYPE.PTR:
        ip = ptr_address(qname)
        target = reverse(ip) if ip is not None else None
        if target is None:
            return None
        reply = _reply(request)
        reply.add_answer(RR(qname, QTYPE.PTR, rdata=PTR(normalize(target) + "."), ttl=TTL))
        return reply
    return None


async def _query_udp(packet: bytes, upstream: Upstream, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
            if not received.done():
                received.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not received.done():
                received.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(upstream.address, upstream.port))
    try:
        transport.sendto(packet)
        return await asyncio.wait_for(received, timeout)
    finally:
        transport.close()


async def _query_tcp(packet: bytes, upstream: Upstream, timeout: float) -> bytes:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(upstream.address, upstream.port)
        try:
            writer.write(struct.pack("!H", len(packet)) + packet)
            await writer.drain()
            (size,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.wait_for(exchange(), timeout)


class EmbeddedResolver:
    """One sandbox's DNS server. ``lookup(name)`` gets a lower-case name without trailing dot and
    returns its IPv4 addresses (empty when unknown); ``reverse(ip)`` returns the name for an address
    or None. ``upstreams`` are the daemon's ``--dns`` servers; none means unknown names get SERVFAIL.
    At most ``max_concurrent`` queries are in flight; UDP queries beyond that are dropped (the
    client retries) and TCP connections beyond it are closed."""

    def __init__(
        self,
        lookup: Lookup,
        reverse: Reverse,
        upstreams: Sequence[Upstream] = (),
        *,
        max_concurrent: int = MAX_CONCURRENT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        self.lookup = lookup
        self.reverse = reverse
        self.upstreams = tuple(upstreams)
        self.upstream_timeout = upstream_timeout
        self.max_concurrent = max_concurrent
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    # -- answering -------------------------------------------------------------------------------

    async def resolve(self, packet: bytes, *, tcp: bool = False) -> bytes | None:
        """The reply to one wire-format query, or None for a packet that is not a DNS query."""
        try:
            request = DNSRecord.parse(packet)
        except (DNSError, ValueError, IndexError, struct.error):
            return None
        if request.header.qr:  # a response sent to us: never answer those (no reflection loops)
            return None
        reply = answer_local(request, self.lookup, self.reverse)
        if reply is not None:
            return bytes(reply.pack())
        forwarded = await self._forward(packet, request.header.id, tcp=tcp)
        if forwarded is not None:
            return forwarded
        return bytes(_reply(request, RCODE.SERVFAIL).pack())

    async def _forward(self, packet: bytes, query_id: int, *, tcp: bool) -> bytes | None:
        for upstream in self.upstreams:
            try:
                if tcp:
                    response = await _query_tcp(packet, upstream, self.upstream_timeout)
                else:
                    response = await _query_udp(packet, upstream, self.upstream_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("dns: upstream %s:%d failed: %s", upstream.address, upstream.port, e)
                continue
            # A reply to some other query (or garbage) is no answer; try the next server.
            if len(response) >= 12 and struct.unpack("!H", response[:2])[0] == query_id:
                return response
        return None

    # -- serving ---------------------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self._udp is not None

    async def start_in_netns(self, netns: Path, address: str = DNS_ADDRESS, port: int = DNS_PORT) -> None:
        """Serve on ``address:port`` (UDP and TCP) inside the network namespace at ``netns``."""
        udp, tcp = await asyncio.to_thread(run_in_netns, netns, lambda: _bind(address, port))
        await self.start(udp, tcp)

    async def start_on(self, address: str, port: int) -> tuple[int, int]:
        """Serve in the daemon's own namespace (tests); port 0 picks free ports. Returns (udp, tcp) ports."""
        udp, tcp = _bind(address, port)
        udp_port, tcp_port = udp.getsockname()[1], tcp.getsockname()[1]
        await self.start(udp, tcp)
        return udp_port, tcp_port

    async def start(self, udp: socket.socket, tcp: socket.socket) -> None:
        """Serve on two bound sockets (the TCP one listening); takes ownership of both."""
        if self._udp is not None:
            udp.close()
            tcp.close()
            raise RuntimeError("resolver already serving")
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self), sock=udp)
        except BaseException:
            udp.close()
            tcp.close()
            raise
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp)
        except BaseException:
            transport.close()
            tcp.close()
            raise
        self._udp = transport

    async def close(self) -> None:
        """Stop serving and drop queries in flight; idempotent."""
        udp, tcp, self._udp, self._tcp = self._udp, self._tcp, None, None
        if udp is not None:
            udp.close()
        if tcp is not None:
            tcp.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()

    def _acquire(self) -> bool:
        if self._busy >= self.max_concurrent:
            return False
        self._busy += 1
        return True

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_udp(self, packet: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.resolve(packet)
            if reply is not None and self._udp is not None:
                if len(reply) > 512 and not _has_edns(packet):
                    reply = _truncate(reply)
                self._udp.sendto(reply, addr)
        finally:
            self._busy -= 1

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._acquire():
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (size,) = struct.unpack("!H", header)
                    packet = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, OSError):
                    return
                reply = await self.resolve(packet, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except OSError:
            return
        finally:
            self._busy -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: EmbeddedResolver) -> None:
        self.resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.resolver._acquire():
            self.resolver._spawn(self.resolver._answer_udp(data, addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error: %s", exc)


def _has_edns(packet: bytes) -> bool:
    with contextlib.suppress(DNSError, ValueError, IndexError, struct.error):
        return any(rr.rtype == QTYPE.OPT for rr in DNSRecord.parse(packet).ar)
    return False


def _truncate(reply: bytes) -> bytes:
    """A forwarded answer too big for plain UDP: header and question only, TC set (client retries on TCP)."""
    record = DNSRecord.parse(reply)
    short = DNSRecord(header=record.header, questions=record.questions)
    short.header.tc = 1
    return bytes(short.pack())


def _bind(address: str, port: int) -> tuple[socket.socket, socket.socket]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind((address, port))
        udp.setblocking(False)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Port 0 (tests): the TCP side may get another free port than UDP; both are reported.
            tcp.bind((address, port))
            tcp.listen(128)
            tcp.setblocking(False)
        except BaseException:
            tcp.close()
            raise
    except BaseException:
        udp.close()
        raise
    return udp, tcp
