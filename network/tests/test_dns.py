"""Embedded DNS: answer logic on dnslib packets, forwarding to a fake upstream, loopback UDP/TCP
serving, and (root) serving 127.0.0.11:53 inside a real sandbox. Everything stays on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from network.dns import TTL, EmbeddedResolver, Upstream, answer_local, ptr_address
from network.sandbox import SandboxManager, run_in_netns
from network.tests.nettools import Tag

pytestmark = pytest.mark.anyio

WEB = IPv4Address("172.30.0.2")
DB = IPv4Address("172.30.0.3")
TABLE = {
    "web": [WEB],
    "web.appnet": [WEB],
    "frontend": [WEB],  # a network alias
    "db": [DB],
    "both": [WEB, DB],
}
NAMES = {WEB: "web.appnet", DB: "db.appnet"}


def lookup(name: str) -> Sequence[IPv4Address]:
    return TABLE.get(name, [])


def reverse(ip: IPv4Address) -> str | None:
    return NAMES.get(ip)


def ask(name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.question(name, qtype)


def answers(reply: DNSRecord) -> list[tuple[str, str, str, int]]:
    return [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata), rr.ttl) for rr in reply.rr]


# -- answer logic ------------------------------------------------------------------------------------


def test_a_record_for_names_aliases_and_network_forms():
    for name in ("web", "web.appnet", "frontend", "WEB.AppNet.", "web."):
        reply = answer_local(ask(name), lookup, reverse)
        assert reply is not None
        assert reply.header.rcode == RCODE.NOERROR
        assert reply.header.ra == 1 and reply.header.qr == 1
        qname = name if name.endswith(".") else name + "."
        assert answers(reply) == [(qname, "A", str(WEB), TTL)]
    reply = answer_local(ask("both"), lookup, reverse)
    assert reply is not None and [a[2] for a in answers(reply)] == [str(WEB), str(DB)]


def test_reply_keeps_query_id_and_question():
    request = ask("db")
    reply = answer_local(request, lookup, reverse)
    assert reply is not None
    parsed = DNSRecord.parse(reply.pack())
    assert parsed.header.id == request.header.id
    assert str(parsed.q.qname) == "db." and parsed.q.qtype == QTYPE.A


def test_aaaa_for_known_name_is_empty_noerror():
    reply = answer_local(ask("web", "AAAA"), lookup, reverse)
    assert reply is not None
    assert reply.header.rcode == RCODE.NOERROR and reply.rr == []


def test_ptr_for_known_address():
    reply = answer_local(ask("2.0.30.172.in-addr.arpa", "PTR"), lookup, reverse)
    assert reply is not None
    assert answers(reply) == [("2.0.30.172.in-addr.arpa.", "PTR", "web.appnet.", TTL)]
    assert answer_local(ask("9.0.30.172.in-addr.arpa", "PTR"), lookup, reverse) is None


def test_ptr_address_parsing():
    assert ptr_address("3.0.30.172.IN-ADDR.ARPA.") == DB
    assert ptr_address("0.30.172.in-addr.arpa") is None
    assert ptr_address("300.0.30.172.in-addr.arpa") is None
    assert ptr_address("web.appnet") is None


def test_unknown_names_and_other_types_go_to_forwarding():
    assert answer_local(ask("example.com"), lookup, reverse) is None
    assert answer_local(ask("web", "MX"), lookup, reverse) is None


async def test_unknown_without_upstreams_is_immediate_servfail():
    resolver = EmbeddedResolver(lookup, reverse)
    request = ask("example.com")
    raw = await asyncio.wait_for(resolver.resolve(bytes(request.pack())), 1)
    assert raw is not None
    reply = DNSRecord.parse(raw)
    assert reply.header.id == request.header.id
    assert reply.header.rcode == RCODE.SERVFAIL and reply.rr == []


async def test_garbage_and_responses_get_no_answer():
    resolver = EmbeddedResolver(lookup, reverse)
    assert await resolver.resolve(b"\x01\x02") is None
    response = answer_local(ask("web"), lookup, reverse)
    assert response is not None
    assert await resolver.resolve(bytes(response.pack())) is None


# -- forwarding to a fake upstream on loopback ------------------------------------------------------


class FakeUpstream(asyncio.DatagramProtocol):
    """Answers every A query with 192.0.2.1 and counts what it got."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def reply_to(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        self.seen.append(str(request.q.qname))
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=42))
        return bytes(reply.pack())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.reply_to(data), addr)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeUpstream, int]]:
    loop = asyncio.get_running_loop()
    fake = FakeUpstream()
    transport, _ = await loop.create_datagram_endpoint(lambda: fake, local_addr=("127.0.0.1", 0))

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        reply = fake.reply_to(await reader.readexactly(size))
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()

    port = transport.get_extra_info("sockname")[1]
    server = await asyncio.start_server(tcp, "127.0.0.1", port)
    try:
        yield fake, port
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


async def test_unknown_names_are_forwarded_to_upstream(upstream: tuple[FakeUpstream, int]):
    fake, port = upstream
    resolver = EmbeddedResolver(lookup, reverse, [Upstream("127.0.0.1", port)])
    for tcp in (False, True):
        request = ask("example.com")
        raw = await resolver.resolve(bytes(request.pack()), tcp=tcp)
        assert raw is not None
        reply = DNSRecord.parse(raw)
        assert reply.header.id == request.header.id
        assert answers(reply) == [("example.com.", "A", "192.0.2.1", 42)]
    # Known names never reach the upstream.
    raw = await resolver.resolve(bytes(ask("web").pack()))
    assert raw is not None and answers(DNSRecord.parse(raw))[0][2] == str(WEB)
    assert fake.seen == ["example.com.", "example.com."]


async def test_dead_upstream_is_skipped_then_servfail(upstream: tuple[FakeUpstream, int]):
    fake, port = upstream
    # A loopback port nobody listens on: UDP gets ICMP refused, i.e. an immediate failure.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    resolver = EmbeddedResolver(lookup, reverse, [Upstream("127.0.0.1", dead), Upstream("127.0.0.1", port)])
    raw = await resolver.resolve(bytes(ask("example.org").pack()))
    assert raw is not None and answers(DNSRecord.parse(raw))[0][2] == "192.0.2.1"
    only_dead = EmbeddedResolver(lookup, reverse, [Upstream("127.0.0.1", dead)], upstream_timeout=1)
    raw = await only_dead.resolve(bytes(ask("example.org").pack()))
    assert raw is not None and DNSRecord.parse(raw).header.rcode == RCODE.SERVFAIL
    assert fake.seen == ["example.org."]


# -- serving on loopback ---------------------------------------------------------------------------


def query_udp(address: str, port: int, request: DNSRecord) -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(bytes(request.pack()), (address, port))
        return DNSRecord.parse(s.recv(65535))


def query_tcp(address: str, port: int, requests: Sequence[DNSRecord]) -> list[DNSRecord]:
    out = []
    with socket.create_connection((address, port), timeout=3) as s:
        for request in requests:
            packet = bytes(request.pack())
            s.sendall(struct.pack("!H", len(packet)) + packet)
            (size,) = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))
            out.append(DNSRecord.parse(s.recv(size, socket.MSG_WAITALL)))
    return out


async def test_serves_udp_and_tcp_on_loopback():
    resolver = EmbeddedResolver(lookup, reverse)
    udp_port, tcp_port = await resolver.start_on("127.0.0.1", 0)
    try:
        assert resolver.serving
        reply = await asyncio.to_thread(query_udp, "127.0.0.1", udp_port, ask("web.appnet"))
        assert answers(reply) == [("web.appnet.", "A", str(WEB), TTL)]
        replies = await asyncio.to_thread(
            query_tcp, "127.0.0.1", tcp_port, [ask("db"), ask("3.0.30.172.in-addr.arpa", "PTR"), ask("x.y")]
        )
        assert answers(replies[0]) == [("db.", "A", str(DB), TTL)]
        assert answers(replies[1])[0][2] == "db.appnet."
        assert replies[2].header.rcode == RCODE.SERVFAIL
        # Many queries at once: all answered (below the concurrency bound).
        many = await asyncio.gather(
            *(asyncio.to_thread(query_udp, "127.0.0.1", udp_port, ask("both")) for _ in range(20))
        )
        assert all(len(r.rr) == 2 for r in many)
    finally:
        await resolver.close()
    assert not resolver.serving
    await resolver.close()  # idempotent
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", tcp_port))


async def test_udp_beyond_the_bound_is_dropped():
    gate = asyncio.Event()
    resolver = EmbeddedResolver(lookup, reverse, max_concurrent=1)

    async def slow(packet: bytes, *, tcp: bool = False) -> bytes | None:
        await gate.wait()
        return None

    resolver.resolve = slow  # type: ignore[method-assign]
    udp_port, _ = await resolver.start_on("127.0.0.1", 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(bytes(ask("web").pack()), ("127.0.0.1", udp_port))
            for _ in range(100):
                if resolver._busy:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert resolver._busy == 1 and len(resolver._tasks) == 1
    finally:
        gate.set()
        await resolver.close()
    assert resolver._busy == 0


# -- inside a real sandbox (root) ------------------------------------------------------------------


@pytest.mark.privileged
async def test_serves_127_0_0_11_inside_a_sandbox(host_guard: Path, tag: Tag):
    sandboxes = SandboxManager(host_guard)
    sandbox_id = f"{tag.hex}-dns"
    netns = sandboxes.create(sandbox_id)
    resolver = EmbeddedResolver(lookup, reverse)
    try:
        await resolver.start_in_netns(netns)

        def inside() -> tuple[DNSRecord, DNSRecord, list[DNSRecord]]:
            a = query_udp("127.0.0.11", 53, ask("frontend"))
            unknown = query_udp("127.0.0.11", 53, ask("example.com"))
            ptr = query_tcp("127.0.0.11", 53, [ask("2.0.30.172.in-addr.arpa", "PTR")])
            return a, unknown, ptr

        a, unknown, ptr = await asyncio.to_thread(run_in_netns, netns, inside)
        assert answers(a) == [("frontend.", "A", str(WEB), TTL)]
        assert unknown.header.rcode == RCODE.SERVFAIL
        assert answers(ptr[0])[0][2] == "web.appnet."
    finally:
        try:
            await resolver.close()
        finally:
            sandboxes.delete(sandbox_id)
    assert sandboxes.list() == []
