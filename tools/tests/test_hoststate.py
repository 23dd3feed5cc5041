"""tools/hoststate.py: which lines of the host's state are a test daemon's, and the before/after diff."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hoststate", TOOLS / "hoststate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("hoststate", module)
    spec.loader.exec_module(module)
    return module


hoststate = _load()


@dataclass
class FakeDaemon:
    bridge: str = "skd0a0b0c"
    link_alias: str = "skiff:SK01234567"
    chain_names: set[str] = field(
        default_factory=lambda: {"SK01234567", "SK01234567-FORWARD", "SK01234567-POSTROUTING"}
    )


LO = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT"
DOCKER0 = "5: docker0: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN\\    link/ether 02:42:aa"
OURS = "9: skd0a0b0c: <BROADCAST,UP> mtu 1500 state DOWN\\    link/ether 02:42:01\\    alias skiff:SK01234567"
VETH = "11: veth1234567@if10: <BROADCAST> master br-0123\\    link/ether 3a:01\\    alias skiff:SK01234567"
USER_BRIDGE = (
    "10: br-0123: <BROADCAST> mtu 1500 state UP\\    link/ether 02:42:02\\    alias skiff:SK01234567"
)
OTHER_SKIFF = "12: vethabcdef0@if11: <BROADCAST> mtu 1500\\    link/ether 3a:02\\    alias skiff:SKFFFFFFFF"

BASE = hoststate.HostState(
    links=(LO, DOCKER0),
    routes=("v4: default via 10.0.0.1 dev eth0", "v4: 172.17.0.0/16 dev docker0 proto kernel"),
    rules=("filter: :FORWARD ACCEPT [0:0]", "filter: -A FORWARD -j DOCKER-USER"),
)


def test_unchanged_and_foreign_changes_pass():
    after = hoststate.HostState(
        links=(LO, OTHER_SKIFF),  # docker0 went away, another daemon's veth came: not ours
        # another daemon's route, even in an address range one of ours could use
        routes=("v4: default via 10.0.0.1 dev eth0", "v4: 10.190.0.0/24 dev skdffffff"),
        rules=("filter: :FORWARD DROP [0:0]", "filter: -A FORWARD -j SKFFFFFFFF-FORWARD"),
    )
    assert hoststate.differences(BASE, BASE, [FakeDaemon()]) == []
    assert hoststate.differences(BASE, after, [FakeDaemon()]) == []
    assert hoststate.differences(BASE, after, []) == []


def test_leftovers_of_a_test_daemon_are_reported():
    after = hoststate.HostState(
        links=(LO, DOCKER0, OURS, USER_BRIDGE, VETH),
        routes=(*BASE.routes, "v4: 10.190.3.0/24 dev br-0123 proto kernel", "v6: fe80::/64 dev skd0a0b0c"),
        rules=(
            *BASE.rules,
            "filter: -A FORWARD -j SK01234567-FORWARD",
            "nat: -A SK01234567-POSTROUTING -s 10.190.0.0/24 -j MASQUERADE",
            "filter: -A FORWARD -i skd0a0b0c -o eth0 -j REJECT",
        ),
    )
    assert hoststate.differences(BASE, after, [FakeDaemon()]) == [
        "links left behind: br-0123",
        "links left behind: skd0a0b0c",
        "links left behind: veth1234567",
        "routes left behind: v4: 10.190.3.0/24 dev br-0123 proto kernel",
        "routes left behind: v6: fe80::/64 dev skd0a0b0c",
        "rules left behind: filter: -A FORWARD -i skd0a0b0c -o eth0 -j REJECT",
        "rules left behind: filter: -A FORWARD -j SK01234567-FORWARD",
        "rules left behind: nat: -A SK01234567-POSTROUTING -s 10.190.0.0/24 -j MASQUERADE",
    ]
    # and removing something of theirs that was there before counts too
    assert hoststate.differences(after, BASE, [FakeDaemon()])[0] == "links gone: br-0123"


@pytest.mark.privileged
def test_capture_reads_this_host():
    if os.geteuid() != 0:
        pytest.skip("iptables-save needs root")
    state = hoststate.capture()
    assert any(hoststate.link_name(ln) == "lo" for ln in state.links)
    assert any(ln.startswith("filter: :FORWARD ") for ln in state.rules)
    assert all("[" not in ln or "[0:0]" in ln for ln in state.rules if ln.split(": ", 1)[1].startswith(":"))
