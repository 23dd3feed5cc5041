"""Fixtures for network tests.

Privileged tests get a ``host_guard`` (snapshot of everything carrying the run's tag before and
after, forced cleanup even when the test failed, then the before == after assertion) and an
``env`` that wires a real BridgeDriver with the run's own iptables chains, sandboxes under the
test's temp dir, an IPAM over the run's subnets, and the REJECT rule that keeps anything from
leaving the machine through the default-route interface.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest

import network.bridge
from network.bridge import BRIDGE_NAME, BridgeDriver
from network.driver import EndpointInfo, EndpointSpec, NetworkSpec
from network.firewall import Firewall, outbound_reject_rule
from network.ipam import Ipam, Pool
from network.netlink import default_route_ifname, host_networks
from network.portmap import PortAllocator
from network.sandbox import SandboxManager
from network.tests.nettools import Tag, force_cleanup, iptables_lines, snapshot


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tag(monkeypatch: pytest.MonkeyPatch) -> Tag:
    """The run's names; every veth the bridge driver makes is recorded in ``tag.veths``."""
    t = Tag()
    # Another run (or daemon) using the same random /20 is unlikely; skip the ones visibly in use.
    for _ in range(8):
        busy = host_networks()
        if not any(t.pool.base.overlaps(n) for n in busy) and not any(map(t.owns_line, iptables_lines())):
            break
        t = Tag()
    real = network.bridge.create_veth_in_sandbox

    def recording(*args: Any, **kwargs: Any) -> str:
        t.veths.add(kwargs["host"])  # the name asked for: a leftover of a failed call has it
        host = real(*args, **kwargs)
        t.veths.add(host)
        return host

    monkeypatch.setattr(network.bridge, "create_veth_in_sandbox", recording)
    return t


@pytest.fixture
def host_guard(tag: Tag, tmp_path: Path) -> Iterator[Path]:
    """Yields the sandbox root. Teardown runs after the test's async fixtures have cleaned up."""
    root = tmp_path / "netns"
    before = snapshot(tag, root)
    assert before.links == before.routes == before.rules == before.mounts == frozenset()
    yield root
    after = snapshot(tag, root)
    force_cleanup(tag, root)
    assert after == before, f"left behind: {after}"


@dataclass
class Env:
    tag: Tag
    sandboxes: SandboxManager
    driver: BridgeDriver
    ipam: Ipam
    outside: str | None = field(default_factory=default_route_ifname)
    pools: dict[str, Pool] = field(default_factory=dict)
    _n: int = 0

    def reject_argv(self, op: str) -> list[str]:
        assert self.outside is not None
        rule = outbound_reject_rule(f"skt{self.tag.hex}+", self.outside, self.tag.comment)
        return ["iptables", "-w", "-t", "filter", op, "FORWARD", *(["1"] if op == "-I" else []), *rule]

    def drop_reject(self) -> None:
        if self.outside is not None:
            while subprocess.run(self.reject_argv("-D"), capture_output=True).returncode == 0:
                pass

    async def add_network(
        self, *, internal: bool = False, options: dict[str, str] | None = None
    ) -> NetworkSpec:
        self._n += 1
        pool = self.ipam.request_pool()
        spec = NetworkSpec(
            f"{self.tag.hex}net{self._n:02d}".ljust(64, "0"),
            pool.subnet,
            pool.gateway,
            internal,
            {BRIDGE_NAME: self.tag.bridge(self._n), **(options or {})},
        )
        await self.driver.create_network(spec)
        self.pools[spec.network_id] = pool
        # Above skiff's jumps, which a first network (re)inserts at the top of FORWARD.
        self.drop_reject()
        if self.outside is not None:
            subprocess.run(self.reject_argv("-I"), check=True, capture_output=True)
        return spec

    async def add_container(
        self, spec: NetworkSpec, name: str, *, ip: str | None = None
    ) -> tuple[Path, EndpointInfo]:
        netns = self.sandboxes.create(f"{self.tag.hex}-{name}")
        address: IPv4Interface = self.ipam.request_address(self.pools[spec.network_id].pool_id, ip)
        info = await self.driver.create_endpoint(spec.network_id, EndpointSpec(f"ep-{name}", address))
        await self.driver.join(spec.network_id, info.endpoint_id, netns)
        return netns, info

    async def close(self) -> None:
        try:
            self.drop_reject()
            await self.driver.close()
        finally:
            for sandbox_id in self.sandboxes.list():
                self.sandboxes.delete(sandbox_id)


@pytest.fixture
async def env(host_guard: Path, tag: Tag) -> AsyncIterator[Env]:
    e = Env(
        tag,
        SandboxManager(host_guard),
        BridgeDriver(Firewall(chains=tag.chains), PortAllocator()),
        Ipam([tag.pool], host_networks=host_networks),
    )
    try:
        yield e
    finally:
        await e.close()
