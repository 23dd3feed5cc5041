"""Port specs and the host-port allocator (real sockets on 127.0.0.1 only; no root needed)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from engine import errdefs
from network.portmap import (
    DEFAULT_EPHEMERAL_RANGE,
    PortAllocatedError,
    PortAllocator,
    PortBinding,
    ephemeral_port_range,
    parse_port_spec,
)

LOOPBACK = IPv4Address("127.0.0.1")
ANY = IPv4Address("0.0.0.0")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", [PortBinding(80)]),
        ("8080:80", [PortBinding(80, host_port=8080)]),
        ("8080:80/udp", [PortBinding(80, "udp", host_port=8080)]),
        ("127.0.0.1:8080:80", [PortBinding(80, host_ip="127.0.0.1", host_port=8080)]),
        ("127.0.0.1::80", [PortBinding(80, host_ip="127.0.0.1")]),
        ("8000-8001:80-81/tcp", [PortBinding(80, host_port=8000), PortBinding(81, host_port=8001)]),
        ("8000-8010:80", [PortBinding(80, host_port=8000, host_port_end=8010)]),
        ("80-81", [PortBinding(80), PortBinding(81)]),
    ],
)
def test_parse_port_spec(spec: str, expected: list[PortBinding]):
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "x", "8080:x", "1.2.3:80:80", "80/icmp", "8000-8002:80-81", "0:80", "70000"]
)
def test_parse_port_spec_rejects(spec: str):
    with pytest.raises(errdefs.InvalidParameter):
        parse_port_spec(spec)


def test_binding_from_api():
    assert PortBinding.from_api("80/tcp", "", "8080") == PortBinding(80, "tcp", "", 8080)
    assert PortBinding.from_api("53/udp", "127.0.0.1", "") == PortBinding(53, "udp", "127.0.0.1", 0)
    assert PortBinding.from_api("80/tcp", None, "8000-8010") == PortBinding(80, "tcp", "", 8000, 8010)
    with pytest.raises(errdefs.InvalidParameter):
        PortBinding.from_api("80-81/tcp", "", "")


def test_ephemeral_range(tmp_path: Path):
    f = tmp_path / "range"
    f.write_text("32768\t60999\n")
    assert ephemeral_port_range(f) == (32768, 60999)
    assert ephemeral_port_range(tmp_path / "missing") == DEFAULT_EPHEMERAL_RANGE


def test_memory_allocator_conflicts_and_round_robin():
    ports = PortAllocator((40000, 40002), reserve=False)
    assert ports.allocate("tcp", ANY, 8080) == 8080
    with pytest.raises(PortAllocatedError) as e:
        ports.allocate("tcp", ANY, 8080)
    assert e.value.message == "Bind for 0.0.0.0:8080 failed: port is already allocated"
    assert isinstance(e.value, errdefs.Internal)  # dockerd answers 500
    with pytest.raises(PortAllocatedError):
        ports.allocate("tcp", LOOPBACK, 8080)  # the wildcard covers every address
    assert ports.allocate("udp", ANY, 8080) == 8080  # another protocol is another port
    assert [ports.allocate("tcp", ANY) for _ in range(3)] == [40000, 40001, 40002]
    with pytest.raises(errdefs.Internal, match="all ports are allocated"):
        ports.allocate("tcp", ANY)
    ports.release("tcp", ANY, 40001)
    assert ports.allocate("tcp", ANY) == 40001
    ports.release("tcp", ANY, 40000)
    # Round-robin: the next pick continues after the last one, wrapping around.
    assert ports.allocate("tcp", ANY) == 40000
    ports.release_all()
    assert ports.allocated() == []


def test_memory_allocator_host_port_range():
    ports = PortAllocator((40000, 40010), reserve=False)
    assert ports.allocate("tcp", ANY, 8000, 8002) == 8000
    assert ports.allocate("tcp", ANY, 8000, 8002) == 8001
    ports.allocate("tcp", ANY, 8002)
    with pytest.raises(errdefs.Internal):
        ports.allocate("tcp", ANY, 8000, 8002)


@contextlib.contextmanager
def listener(kind: int = socket.SOCK_STREAM) -> Iterator[int]:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        yield s.getsockname()[1]
    finally:
        s.close()


def test_reserving_allocator_sees_ports_used_on_the_host():
    ports = PortAllocator(reserve=True)
    try:
        with listener() as busy:
            with pytest.raises(PortAllocatedError) as e:
                ports.allocate("tcp", LOOPBACK, busy)
            assert e.value.message == f"Bind for 127.0.0.1:{busy} failed: port is already allocated"
            assert ports.allocated() == []
        with listener(socket.SOCK_DGRAM) as busy_udp:
            with pytest.raises(PortAllocatedError):
                ports.allocate("udp", LOOPBACK, busy_udp)
            # A range skips the busy port.
            assert ports.allocate("udp", LOOPBACK, busy_udp, busy_udp + 1) == busy_udp + 1
    finally:
        ports.release_all()


def test_reserved_port_cannot_be_taken_by_others_until_released():
    ports = PortAllocator(reserve=True)
    try:
        port = ports.allocate("tcp", LOOPBACK)
        low, high = ports.ephemeral
        assert low <= port <= high
        probe = socket.socket()
        try:
            with pytest.raises(OSError):
                probe.bind(("127.0.0.1", port))
        finally:
            probe.close()
        ports.release("tcp", LOOPBACK, port)
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        finally:
            probe.close()
    finally:
        ports.release_all()


def test_unassignable_address_fails_like_the_userland_proxy():
    ports = PortAllocator(reserve=True)
    with pytest.raises(errdefs.Internal) as e:
        ports.allocate("tcp", IPv4Address("203.0.113.77"), 8080)  # TEST-NET-3, never local
    assert "cannot assign requested address" in e.value.message
    assert ports.allocated() == []
