"""iptables rule builders and the Firewall's command sequences, against a recording runner (no root)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from engine import errdefs
from network.firewall import (
    BridgeRules,
    Chains,
    CommandResult,
    Firewall,
    PortForward,
    jump_argv,
    jump_rules,
    outbound_reject_rule,
    render_delta,
    render_restore,
    teardown_argvs,
)

pytestmark = pytest.mark.anyio

CH = Chains()
NET = BridgeRules("br-0123456789ab", IPv4Network("172.18.0.0/16"))
DEFAULT = BridgeRules("skiff0", IPv4Network("172.17.0.0/16"))
INTERNAL = BridgeRules("br-internal0", IPv4Network("172.19.0.0/16"), internal=True)
WEB = PortForward("skiff0", "tcp", IPv4Address("0.0.0.0"), 8080, IPv4Address("172.17.0.2"), 80)
DNS = PortForward("br-0123456789ab", "udp", IPv4Address("127.0.0.1"), 5353, IPv4Address("172.18.0.3"), 53)


def test_chain_names():
    assert (CH.ports, CH.forward, CH.user, CH.isolation1, CH.isolation2, CH.postrouting) == (
        "SKIFF",
        "SKIFF-FORWARD",
        "SKIFF-USER",
        "SKIFF-ISOLATION-STAGE-1",
        "SKIFF-ISOLATION-STAGE-2",
        "SKIFF-POSTROUTING",
    )
    assert ("filter", "SKIFF-USER") not in CH.owned()  # the admin's chain is never flushed
    with pytest.raises(ValueError):
        Chains("A-VERY-LONG-PREFIX")


def test_render_empty_declares_every_owned_chain():
    assert render_restore(CH, [], []) == (
        "*filter\n"
        ":SKIFF - [0:0]\n"
        ":SKIFF-FORWARD - [0:0]\n"
        ":SKIFF-ISOLATION-STAGE-1 - [0:0]\n"
        ":SKIFF-ISOLATION-STAGE-2 - [0:0]\n"
        "-A SKIFF-FORWARD -j SKIFF-ISOLATION-STAGE-1\n"
        "-A SKIFF-ISOLATION-STAGE-1 -j RETURN\n"
        "-A SKIFF-ISOLATION-STAGE-2 -j RETURN\n"
        "COMMIT\n"
        "*nat\n"
        ":SKIFF - [0:0]\n"
        ":SKIFF-POSTROUTING - [0:0]\n"
        "COMMIT\n"
    )


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


def test_render_bridges_ports_isolation_and_nat():
    lines = rule_lines(render_restore(CH, [DEFAULT, NET, INTERNAL], [WEB, DNS]))
    assert lines == [
        # filter
        "-A SKIFF-FORWARD -j SKIFF-ISOLATION-STAGE-1",
        "-A SKIFF-FORWARD -o skiff0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A SKIFF-FORWARD -o skiff0 -j SKIFF",
        "-A SKIFF-FORWARD -i skiff0 ! -o skiff0 -j ACCEPT",
        "-A SKIFF-FORWARD -i skiff0 -o skiff0 -j ACCEPT",
        "-A SKIFF-FORWARD -o br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A SKIFF-FORWARD -o br-0123456789ab -j SKIFF",
        "-A SKIFF-FORWARD -i br-0123456789ab ! -o br-0123456789ab -j ACCEPT",
        "-A SKIFF-FORWARD -i br-0123456789ab -o br-0123456789ab -j ACCEPT",
        "-A SKIFF-FORWARD -i br-internal0 -o br-internal0 -j ACCEPT",
        "-A SKIFF-ISOLATION-STAGE-1 -i skiff0 ! -o skiff0 -j SKIFF-ISOLATION-STAGE-2",
        "-A SKIFF-ISOLATION-STAGE-1 -i br-0123456789ab ! -o br-0123456789ab -j SKIFF-ISOLATION-STAGE-2",
        "-A SKIFF-ISOLATION-STAGE-1 ! -s 172.19.0.0/16 -o br-internal0 -j DROP",
        "-A SKIFF-ISOLATION-STAGE-1 ! -d 172.19.0.0/16 -i br-internal0 -j DROP",
        "-A SKIFF-ISOLATION-STAGE-1 -j RETURN",
        "-A SKIFF-ISOLATION-STAGE-2 -o skiff0 -j DROP",
        "-A SKIFF-ISOLATION-STAGE-2 -o br-0123456789ab -j DROP",
        "-A SKIFF-ISOLATION-STAGE-2 -j RETURN",
        "-A SKIFF -d 172.17.0.2/32 ! -i skiff0 -o skiff0 -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A SKIFF -d 172.18.0.3/32 ! -i br-0123456789ab -o br-0123456789ab -p udp -m udp --dport 53"
        " -j ACCEPT",
        # nat
        "-A SKIFF-POSTROUTING -s 172.17.0.0/16 ! -o skiff0 -j MASQUERADE",
        "-A SKIFF-POSTROUTING -o skiff0 -m addrtype --src-type LOCAL -j MASQUERADE",
        "-A SKIFF-POSTROUTING -s 172.18.0.0/16 ! -o br-0123456789ab -j MASQUERADE",
        "-A SKIFF-POSTROUTING -o br-0123456789ab -m addrtype --src-type LOCAL -j MASQUERADE",
        "-A SKIFF-POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
        "-A SKIFF-POSTROUTING -s 172.18.0.3/32 -d 172.18.0.3/32 -p udp -m udp --dport 53 -j MASQUERADE",
        "-A SKIFF -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80",
        "-A SKIFF -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.18.0.3:53",
    ]


def test_no_masquerade_and_no_icc_options():
    quiet = BridgeRules("br-quiet", IPv4Network("10.1.0.0/24"), icc=False, masquerade=False)
    lines = rule_lines(render_restore(CH, [quiet], []))
    assert "-A SKIFF-FORWARD -i br-quiet -o br-quiet -j DROP" in lines
    assert not any("-s 10.1.0.0/24 ! -o br-quiet -j MASQUERADE" in line for line in lines)
    assert "-A SKIFF-POSTROUTING -o br-quiet -m addrtype --src-type LOCAL -j MASQUERADE" in lines


def test_internal_network_gets_no_nat_and_no_way_out():
    lines = rule_lines(render_restore(CH, [INTERNAL], []))
    assert not any("POSTROUTING" in line for line in lines)
    assert not any("! -o br-internal0 -j ACCEPT" in line for line in lines)


def test_insertions_put_new_rules_where_the_full_rendering_has_them():
    before = ([DEFAULT, NET], [WEB])
    text = render_delta(CH, before, ([DEFAULT, NET], [WEB, DNS]))
    assert text is not None
    assert text.splitlines() == [
        "*filter",
        "-I SKIFF 2 -d 172.18.0.3/32 ! -i br-0123456789ab -o br-0123456789ab"
        " -p udp -m udp --dport 53 -j ACCEPT",
        "COMMIT",
        "*nat",
        "-I SKIFF 2 -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 172.18.0.3:53",
        "-I SKIFF-POSTROUTING 6 -s 172.18.0.3/32 -d 172.18.0.3/32 -p udp -m udp --dport 53 -j MASQUERADE",
        "COMMIT",
    ]
    # A new bridge's isolation rules go ahead of each stage's RETURN, its NAT ahead of the hairpins.
    text = render_delta(CH, before, ([DEFAULT, NET, INTERNAL], [WEB]))
    assert text is not None and "*nat" not in text
    assert "-I SKIFF-ISOLATION-STAGE-1 3 ! -s 172.19.0.0/16 -o br-internal0 -j DROP" in text.splitlines()
    assert render_delta(CH, before, before) == ""
    assert render_delta(CH, ([DEFAULT, NET], [WEB]), ([NET, DEFAULT], [WEB])) is None  # reordered


def _chains_after(full: str, delta: str) -> dict[tuple[str, str], list[str]]:
    """The chains of a full rendering with a delta applied as iptables-restore would."""
    chains: dict[tuple[str, str], list[str]] = {}
    table = ""
    for text in (full, delta):
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A "):
                _, chain, rule = line.split(" ", 2)
                chains.setdefault((table, chain), []).append(rule)
            elif line.startswith("-I "):
                _, chain, pos, rule = line.split(" ", 3)
                chains.setdefault((table, chain), []).insert(int(pos) - 1, rule)
            elif line.startswith("-D "):
                _, chain, rule = line.split(" ", 2)
                chains[(table, chain)].remove(rule)  # the first match, as iptables does
    return {k: v for k, v in chains.items() if v}


def _chains(full: str) -> dict[tuple[str, str], list[str]]:
    return _chains_after(full, "")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (([DEFAULT, NET], [WEB, DNS]), ([DEFAULT, NET], [WEB])),  # a port unpublished
        (([DEFAULT, NET], [WEB, DNS]), ([DEFAULT, NET], [])),
        (([DEFAULT, NET, INTERNAL], [WEB]), ([DEFAULT, NET], [WEB])),  # a network removed
        (([DEFAULT, NET], [WEB]), ([DEFAULT], [])),  # ... with its ports
        (([DEFAULT], []), ([DEFAULT, NET], [WEB])),  # insertions, checked the same way
    ],
)
def test_delta_gives_what_the_full_rendering_gives(before: Any, after: Any) -> None:
    delta = render_delta(CH, before, after)
    assert delta
    assert _chains_after(render_restore(CH, *before), delta) == _chains(render_restore(CH, *after))


def test_jump_rules_and_argv():
    jumps = jump_rules(CH)
    assert [jump_argv(j, "add") for j in jumps] == [
        ["iptables", "-w", "-t", "filter", "-I", "FORWARD", "1", "-j", "SKIFF-USER"],
        ["iptables", "-w", "-t", "filter", "-I", "FORWARD", "1", "-j", "SKIFF-FORWARD"],
        [
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "SKIFF",
        ],
        [
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "SKIFF",
        ],
        ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-j", "SKIFF-POSTROUTING"],
    ]
    assert jump_argv(jumps[0], "-C") == [
        "iptables",
        "-w",
        "-t",
        "filter",
        "-C",
        "FORWARD",
        "-j",
        "SKIFF-USER",
    ]
    assert teardown_argvs(CH)[0] == ["iptables", "-w", "-t", "filter", "-F", "SKIFF"]
    assert teardown_argvs(CH)[-1] == ["iptables", "-w", "-t", "nat", "-X", "SKIFF-POSTROUTING"]
    assert outbound_reject_rule("skiff+", "eth0", "skiff-test") == [
        "-i",
        "skiff+",
        "-o",
        "eth0",
        "-m",
        "comment",
        "--comment",
        "skiff-test",
        "-j",
        "REJECT",
    ]


class Recorder:
    """Plays iptables: remembers jumps and chains well enough for the Firewall's checks."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.stdin: list[str] = []
        self.jumps: list[tuple[str, ...]] = []
        self.user_rules = ["-A SKIFF-USER -j RETURN"]
        self.user_exists = False
        self.fail_restore = False
        self.hold: asyncio.Event | None = None  # set: restores wait for it

    async def __call__(self, argv: Sequence[str], stdin: bytes | None) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "iptables-restore":
            self.stdin.append((stdin or b"").decode())
            if self.hold is not None:
                await self.hold.wait()
            return CommandResult(
                1 if self.fail_restore else 0, b"", b"restore failed" if self.fail_restore else b""
            )
        op, chain, rest = argv[4], argv[5], tuple(argv[6:])
        if op == "-N":
            existed, self.user_exists = self.user_exists, True
            return CommandResult(1 if existed else 0, b"", b"")
        if op == "-S":
            if not self.user_exists:
                return CommandResult(1, b"", b"")
            return CommandResult(0, ("\n".join([f"-N {chain}", *self.user_rules]) + "\n").encode(), b"")
        if op == "-X" and chain == "SKIFF-USER":
            self.user_exists = False
        if chain in ("FORWARD", "PREROUTING", "OUTPUT", "POSTROUTING"):
            key = (chain, *(rest[1:] if op == "-I" else rest))
            if op == "-C":
                return CommandResult(0 if key in self.jumps else 1, b"", b"")
            if op == "-D":
                if key not in self.jumps:
                    return CommandResult(1, b"", b"")
                self.jumps.remove(key)
            if op == "-I":
                self.jumps.insert(0, key)
            if op == "-A":
                self.jumps.append(key)
        return CommandResult(0, b"", b"")


async def test_first_network_sets_up_close_tears_down():
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(DEFAULT)
    assert rec.calls[0] == ["iptables", "-w", "-t", "filter", "-N", "SKIFF-USER"]
    assert rec.calls[1] == ["iptables", "-w", "-t", "filter", "-A", "SKIFF-USER", "-j", "RETURN"]
    assert rec.calls[2] == ["iptables-restore", "-w", "--noflush"]
    assert "-A SKIFF-FORWARD -i skiff0 ! -o skiff0 -j ACCEPT" in rec.stdin[-1]
    assert [j for j in rec.jumps if j[0] == "FORWARD"] == [
        ("FORWARD", "-j", "SKIFF-USER"),
        ("FORWARD", "-j", "SKIFF-FORWARD"),
    ]
    assert len(rec.jumps) == 5

    rec.calls.clear()
    await fw.add_network(NET)
    assert rec.calls == [["iptables-restore", "-w", "--noflush"]]  # one process per change
    await fw.add_forwards([WEB])
    assert "--to-destination 172.17.0.2:80" in rec.stdin[-1]
    await fw.remove_network("skiff0")  # takes its forwards with it
    assert fw.forwards == []
    await fw.settle()
    # deleted rule by rule: what it ran leaves no rule of skiff0
    ran = [ln for ln in rec.stdin[-1].splitlines() if "skiff0" in ln]
    assert ran and all(ln.startswith("-D ") for ln in ran)
    assert "skiff0" not in fw.render()

    # The last network empties the chains; they and the jumps stay until close, as dockerd's do.
    rec.calls.clear()
    await fw.remove_network("br-0123456789ab")
    await fw.settle()
    assert rec.calls == [["iptables-restore", "-w", "--noflush"]]
    assert rule_lines(rec.stdin[-1]) == []  # its rules deleted one by one, nothing rewritten
    assert rule_lines(fw.render()) == [
        "-A SKIFF-FORWARD -j SKIFF-ISOLATION-STAGE-1",
        "-A SKIFF-ISOLATION-STAGE-1 -j RETURN",
        "-A SKIFF-ISOLATION-STAGE-2 -j RETURN",
    ]
    assert len(rec.jumps) == 5
    await fw.add_network(NET)  # no second set-up
    assert rec.calls[-1] == ["iptables-restore", "-w", "--noflush"] and len(rec.calls) == 2

    await fw.close()
    assert rec.jumps == []
    assert not rec.user_exists
    assert ["iptables", "-w", "-t", "nat", "-X", "SKIFF-POSTROUTING"] in rec.calls


async def test_setup_does_not_duplicate_jumps_and_keeps_admin_rules():
    rec = Recorder()
    rec.user_exists = True
    rec.user_rules = ["-A SKIFF-USER -s 10.0.0.0/8 -j DROP", "-A SKIFF-USER -j RETURN"]
    rec.jumps = [
        ("FORWARD", "-j", "SKIFF-FORWARD"),
        ("POSTROUTING", "-j", "SKIFF-POSTROUTING"),
    ]  # left by a crash
    fw = Firewall(rec)
    await fw.add_network(NET)
    assert ["iptables", "-w", "-t", "filter", "-A", "SKIFF-USER", "-j", "RETURN"] not in rec.calls
    assert rec.jumps.count(("POSTROUTING", "-j", "SKIFF-POSTROUTING")) == 1
    assert rec.jumps[:2] == [("FORWARD", "-j", "SKIFF-USER"), ("FORWARD", "-j", "SKIFF-FORWARD")]
    await fw.close()
    # The admin's chain and its jump stay; everything else is gone.
    assert rec.jumps == [("FORWARD", "-j", "SKIFF-USER")]
    assert rec.user_exists


async def test_failed_apply_restores_the_previous_state():
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(NET)
    rec.fail_restore = True
    with pytest.raises(errdefs.Internal, match="restore failed"):
        await fw.add_network(DEFAULT)
    assert fw.networks == [NET]
    with pytest.raises(errdefs.Internal):
        await fw.add_forwards([DNS])
    assert fw.forwards == []
    rec.fail_restore = False
    with pytest.raises(errdefs.NotFound):
        await fw.add_forwards([WEB])  # skiff0 is not a known bridge


async def test_remove_forwards_only_touches_known_ones():
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(NET)
    await fw.add_forwards([DNS])
    count = len(rec.calls)
    await fw.remove_forwards([WEB])
    assert len(rec.calls) == count  # nothing to change, nothing run
    await fw.remove_forwards([DNS])
    assert fw.forwards == []
    await fw.settle()
    ran = [ln for ln in rec.stdin[-1].splitlines() if ln.startswith(("-", ":"))]
    assert ran and all(ln.startswith("-D ") for ln in ran)
    assert "DNAT" not in fw.render()


async def test_disabled_firewall_keeps_books_and_runs_nothing():
    rec = Recorder()
    fw = Firewall(rec, enabled=False)  # dockerd's --iptables=false
    await fw.add_network(NET)
    await fw.add_forwards([DNS])
    assert fw.networks == [NET] and fw.forwards == [DNS]
    await fw.remove_forwards([DNS])
    await fw.remove_network(NET.bridge)
    await fw.add_network(DEFAULT)
    await fw.close()
    assert rec.calls == []


async def test_outbound_reject_comes_first_for_every_bridge():
    rec = Recorder()
    fw = Firewall(rec, outbound_reject="eth0")
    await fw.add_network(NET)
    await fw.add_network(INTERNAL)
    lines = rule_lines(fw.render())
    comment = "-m comment --comment skiff-outbound-reject -j REJECT"
    # The second bridge's reject is inserted after the first one's, ahead of the jump and the ACCEPTs.
    assert f"-I SKIFF-FORWARD 2 -i br-internal0 -o eth0 {comment}" in rec.stdin[-1].splitlines()
    assert lines[:3] == [
        f"-A SKIFF-FORWARD -i br-0123456789ab -o eth0 {comment}",
        f"-A SKIFF-FORWARD -i br-internal0 -o eth0 {comment}",
        "-A SKIFF-FORWARD -j SKIFF-ISOLATION-STAGE-1",
    ]
    await fw.remove_network(INTERNAL.bridge)
    await fw.settle()
    # the bridge's reject goes with its rules
    assert f"-D SKIFF-FORWARD -i br-internal0 -o eth0 {comment}" in rec.stdin[-1].splitlines()
    assert "br-internal0" not in fw.render()
    with pytest.raises(ValueError):
        Firewall(rec, outbound_reject="eth 0")


async def test_reset_removes_a_predecessors_jumps_and_chains():
    rec = Recorder()
    rec.jumps = [("FORWARD", "-j", "SKIFF-FORWARD"), ("FORWARD", "-j", "SKIFF-FORWARD")]  # a crash's
    rec.user_exists = True
    fw = Firewall(rec, enabled=False)  # also when this daemon runs with --iptables=false
    await fw.reset()
    assert rec.jumps == [] and not rec.user_exists
    for table, chain in CH.owned():
        assert ["iptables", "-w", "-t", table, "-X", chain] in rec.calls
    assert not any(c[0] == "iptables-restore" for c in rec.calls)


async def test_removals_reach_the_kernel_later_and_in_order():
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(NET)
    await fw.add_forwards([DNS])
    count = len(rec.calls)
    await fw.remove_forwards([DNS])
    assert fw.forwards == [] and len(rec.calls) == count  # the books at once, the kernel later
    await fw.add_forwards([DNS])  # the same address again, before the deletion ran
    await fw.settle()
    assert len(rec.calls) == count  # the kernel already holds that state: nothing to run
    await fw.remove_network(NET.bridge)
    await fw.remove_forwards([DNS])  # already gone with its bridge
    await fw.settle()
    assert "-D " in rec.stdin[-1] and NET.bridge not in fw.render()


async def test_a_failed_removal_is_logged_and_the_next_change_rewrites(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(NET)
    await fw.add_network(DEFAULT)
    rec.fail_restore = True
    await fw.remove_network(DEFAULT.bridge)
    await fw.settle()
    assert "restore failed" in caplog.text and fw.networks == [NET]
    rec.fail_restore = False
    await fw.add_forwards([DNS])
    assert rec.stdin[-1] == fw.render()  # not a delta from a state the kernel may not hold


async def test_removals_during_a_running_apply_are_not_held_up_nor_lost():
    rec = Recorder()
    fw = Firewall(rec)
    await fw.add_network(NET)
    await fw.add_network(DEFAULT)
    await fw.add_forwards([DNS, WEB])
    rec.hold = asyncio.Event()
    await fw.remove_forwards([DNS])
    await asyncio.sleep(0)  # its deletion is now running, and held
    assert len(rec.stdin) == 4 and "-D " in rec.stdin[-1]
    # Neither waits for the running one; the kernel gets them in a second round.
    await asyncio.wait_for(fw.remove_network(DEFAULT.bridge), 1)
    assert fw.forwards == [] and fw.networks == [NET]
    rec.hold.set()
    await fw.settle()
    changes = [ln for ln in rec.stdin[-1].splitlines() if ln.startswith("-")]
    assert len(rec.stdin) == 5 and changes and all(ln.startswith("-D ") for ln in changes)
    assert any("skiff0" in ln for ln in changes) and not any("5353" in ln for ln in changes)
