"""iptables rules for skiff's bridges: pure rule builders plus an async runner that applies them.

Every rule skiff makes lives in chains of its own; the built-in chains only get jumps into them:

    filter FORWARD     -> SKIFF-USER (left for the admin, never flushed), SKIFF-FORWARD (first, as
                          dockerd puts DOCKER-USER / DOCKER-FORWARD)
    filter SKIFF-FORWARD: SKIFF-ISOLATION-STAGE-1, then per bridge: replies in, published ports
                          (-> SKIFF), out of the bridge, within the bridge (inter-container traffic)
    filter SKIFF-ISOLATION-STAGE-1/2: user networks cannot reach each other; internal networks
                          reach nothing but themselves
    nat PREROUTING, OUTPUT (dst-type LOCAL) -> nat SKIFF: DNAT of published ports
    nat POSTROUTING    -> nat SKIFF-POSTROUTING: MASQUERADE of bridge subnets going out, of host
                          traffic into a bridge (127.0.0.1 publishing) and of hairpin traffic

These accept rules make skiff work where the FORWARD policy is DROP and bridged frames pass
through iptables (br_netfilter), and they name only skiff's bridges, so other engines' chains and
bridges are left alone. Rules skiff did not make are never touched: every change is one
``iptables-restore --noflush`` (atomic per table), and ``teardown`` removes only the jumps and chains
it created. A change that only adds rules (a new bridge, published ports: every container start
with ``-p``) inserts them where the full rendering has them (``-I <chain> <position>``); anything
else, and an insertion that fails, rewrites the owned chains as a whole (declaring a chain flushes
it). The difference is the kernel's: with iptables-nft, iptables-restore waits 10-15 ms per table
as it closes its netlink sockets after a commit that deleted rules (an RCU grace period, on a
loaded 2-core machine), where one that only adds rules takes 2-4 ms in all.

Ports are published without a userland proxy (dockerd's ``--userland-proxy=false``): the DNAT in
OUTPUT also catches 127.0.0.1, which the kernel routes into a bridge only with
``net.ipv4.conf.<bridge>.route_localnet=1`` (set by ``network.bridge``); the LOCAL-source
MASQUERADE then gives such packets the gateway address so the container can answer. Hairpin traffic
(a container reaching its own published port) and traffic leaving the host also need
``net.ipv4.ip_forward=1``, which the bridge driver sets only when asked to (dockerd's --ip-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from engine import errdefs

log = logging.getLogger(__name__)

IPTABLES = "iptables"
IPTABLES_RESTORE = "iptables-restore"
ANY_ADDRESS = IPv4Address("0.0.0.0")


@dataclass(frozen=True)
class Chains:
    """Chain names; tests use their own prefix so they never meet a running daemon's rules."""

    prefix: str = "SKIFF"

    def __post_init__(self) -> None:
        # iptables chain names are at most 28 characters.
        if len(self.isolation2) > 28:
            raise ValueError(f"chain prefix too long: {self.prefix}")

    @property
    def ports(self) -> str:  # filter: ACCEPT for published ports; nat: their DNAT
        return self.prefix

    @property
    def forward(self) -> str:
        return f"{self.prefix}-FORWARD"

    @property
    def user(self) -> str:
        return f"{self.prefix}-USER"

    @property
    def isolation1(self) -> str:
        return f"{self.prefix}-ISOLATION-STAGE-1"

    @property
    def isolation2(self) -> str:
        return f"{self.prefix}-ISOLATION-STAGE-2"

    @property
    def postrouting(self) -> str:
        return f"{self.prefix}-POSTROUTING"

    def owned(self) -> list[tuple[str, str]]:
        """(table, chain) rewritten on every change; SKIFF-USER is not among them."""
        return [
            ("filter", self.ports),
            ("filter", self.forward),
            ("filter", self.isolation1),
            ("filter", self.isolation2),
            ("nat", self.ports),
            ("nat", self.postrouting),
        ]


def _check_ifname(name: str) -> None:
    # Rules are rendered as text for iptables-restore: a name must be one token.
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"invalid interface name: {name!r}")


@dataclass(frozen=True)
class BridgeRules:
    bridge: str
    subnet: IPv4Network
    internal: bool = False
    icc: bool = True
    masquerade: bool = True

    def __post_init__(self) -> None:
        _check_ifname(self.bridge)


@dataclass(frozen=True)
class PortForward:
    bridge: str
    proto: str
    host_ip: IPv4Address  # 0.0.0.0: every local address
    host_port: int
    container_ip: IPv4Address
    container_port: int

    def __post_init__(self) -> None:
        _check_ifname(self.bridge)


@dataclass(frozen=True)
class JumpRule:
    table: str
    chain: str
    args: tuple[str, ...]
    first: bool  # inserted at the top (-I) rather than appended (-A)


def jump_rules(chains: Chains) -> list[JumpRule]:
    """In the order they must end up: SKIFF-USER before SKIFF-FORWARD at the top of FORWARD."""
    return [
        JumpRule("filter", "FORWARD", ("-j", chains.user), True),
        JumpRule("filter", "FORWARD", ("-j", chains.forward), True),
        JumpRule("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", chains.ports), False),
        JumpRule("nat", "OUTPUT", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", chains.ports), False),
        JumpRule("nat", "POSTROUTING", ("-j", chains.postrouting), False),
    ]


def iptables_argv(table: str, op: str, chain: str, *args: str) -> list[str]:
    return [IPTABLES, "-w", "-t", table, op, chain, *args]


def jump_argv(rule: JumpRule, op: str) -> list[str]:
    """``op`` is -C (check), -D (delete) or "add" (-I 1 / -A as the rule wants)."""
    if op == "add":
        if rule.first:
            return iptables_argv(rule.table, "-I", rule.chain, "1", *rule.args)
        return iptables_argv(rule.table, "-A", rule.chain, *rule.args)
    return iptables_argv(rule.table, op, rule.chain, *rule.args)


def restore_argv() -> list[str]:
    return [IPTABLES_RESTORE, "-w", "--noflush"]


def _rule(text: str) -> list[str]:
    # Interface and chain names never contain whitespace (bridge names are checked), so splitting is exact.
    return text.split()


def _proto_match(proto: str, port: int) -> str:
    return f"-p {proto} -m {proto} --dport {port}"


OUTBOUND_REJECT_COMMENT = "skiff-outbound-reject"


def filter_rules(
    chains: Chains,
    networks: Sequence[BridgeRules],
    forwards: Sequence[PortForward],
    outbound_reject: str | None = None,
) -> list[list[str]]:
    """``outbound_reject``: an interface that nothing from these bridges may be forwarded to (test
    daemons); the REJECTs come first in the forward chain, ahead of every ACCEPT."""
    fwd, iso1, iso2 = chains.forward, chains.isolation1, chains.isolation2
    rules: list[list[str]] = []
    if outbound_reject is not None:
        _check_ifname(outbound_reject)
        rules += [
            ["-A", fwd, *outbound_reject_rule(n.bridge, outbound_reject, OUTBOUND_REJECT_COMMENT)]
            for n in networks
        ]
    rules.append(_rule(f"-A {fwd} -j {iso1}"))
    stage1: list[list[str]] = []
    stage2: list[list[str]] = []
    for n in networks:
        br = n.bridge
        within = "ACCEPT" if n.icc else "DROP"
        if n.internal:
            rules.append(_rule(f"-A {fwd} -i {br} -o {br} -j {within}"))
            stage1.append(_rule(f"-A {iso1} ! -s {n.subnet} -o {br} -j DROP"))
            stage1.append(_rule(f"-A {iso1} ! -d {n.subnet} -i {br} -j DROP"))
            continue
        rules += [
            _rule(f"-A {fwd} -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            _rule(f"-A {fwd} -o {br} -j {chains.ports}"),
            _rule(f"-A {fwd} -i {br} ! -o {br} -j ACCEPT"),
            _rule(f"-A {fwd} -i {br} -o {br} -j {within}"),
        ]
        stage1.append(_rule(f"-A {iso1} -i {br} ! -o {br} -j {iso2}"))
        stage2.append(_rule(f"-A {iso2} -o {br} -j DROP"))
    rules += [*stage1, _rule(f"-A {iso1} -j RETURN"), *stage2, _rule(f"-A {iso2} -j RETURN")]
    for f in forwards:
        match = _proto_match(f.proto, f.container_port)
        rules.append(
            _rule(f"-A {chains.ports} -d {f.container_ip}/32 ! -i {f.bridge} -o {f.bridge} {match} -j ACCEPT")
        )
    return rules


def nat_rules(
    chains: Chains, networks: Sequence[BridgeRules], forwards: Sequence[PortForward]
) -> list[list[str]]:
    post = chains.postrouting
    rules: list[list[str]] = []
    for n in networks:
        if n.internal:
            continue
        if n.masquerade:
            rules.append(_rule(f"-A {post} -s {n.subnet} ! -o {n.bridge} -j MASQUERADE"))
        # Host-originated packets DNATed into the bridge keep a local source (127.0.0.1 included).
        rules.append(_rule(f"-A {post} -o {n.bridge} -m addrtype --src-type LOCAL -j MASQUERADE"))
    for f in forwards:
        cip = f"{f.container_ip}/32"
        rules.append(
            _rule(f"-A {post} -s {cip} -d {cip} {_proto_match(f.proto, f.container_port)} -j MASQUERADE")
        )
    for f in forwards:
        dest = "" if f.host_ip == ANY_ADDRESS else f"-d {f.host_ip}/32 "
        match = _proto_match(f.proto, f.host_port)
        target = f"{f.container_ip}:{f.container_port}"
        rules.append(_rule(f"-A {chains.ports} {dest}{match} -j DNAT --to-destination {target}"))
    return rules


def render_restore(
    chains: Chains,
    networks: Sequence[BridgeRules],
    forwards: Sequence[PortForward],
    outbound_reject: str | None = None,
) -> str:
    """``iptables-restore --noflush`` input that rewrites every owned chain (both tables, one call)."""
    out: list[str] = []
    for table, rules in (
        ("filter", filter_rules(chains, networks, forwards, outbound_reject)),
        ("nat", nat_rules(chains, networks, forwards)),
    ):
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for t, chain in chains.owned() if t == table]
        out += [" ".join(rule) for rule in rules]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _rules_by_chain(rules: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    by_chain: dict[str, list[str]] = {}
    for rule in rules:  # every rule is ["-A", chain, ...]
        by_chain.setdefault(rule[1], []).append(" ".join(rule[2:]))
    return by_chain


def _insertions(old: Sequence[str], new: Sequence[str]) -> list[tuple[int, str]] | None:
    """(1-based position, rule) to insert, in order, so that a chain holding ``old`` holds ``new``;
    None when ``new`` does not keep every rule of ``old`` in its order (something goes away)."""
    out: list[tuple[int, str]] = []
    j = 0
    for i, rule in enumerate(new):
        if j < len(old) and old[j] == rule:
            j += 1
        else:
            out.append((i + 1, rule))
    return out if j == len(old) else None


def render_delta(
    chains: Chains,
    before: tuple[Sequence[BridgeRules], Sequence[PortForward]],
    after: tuple[Sequence[BridgeRules], Sequence[PortForward]],
    outbound_reject: str | None = None,
) -> str | None:
    """``iptables-restore --noflush`` input that turns the chains ``render_restore`` wrote for
    ``before`` into what it would write for ``after`` by inserting rules, or deleting rules (by
    their spec, so a chain changed behind skiff's back fails the delete rather than losing a
    rule of someone else), chain by chain; "" when nothing changes, None when a chain needs both
    (then the chains are rewritten as a whole). With iptables-nft a rewrite flushes and re-adds
    every rule, several times slower than adding or deleting the few that change."""
    out: list[str] = []
    for table, old_rules, new_rules in (
        (
            "filter",
            filter_rules(chains, *before, outbound_reject),
            filter_rules(chains, *after, outbound_reject),
        ),
        ("nat", nat_rules(chains, *before), nat_rules(chains, *after)),
    ):
        old, new = _rules_by_chain(old_rules), _rules_by_chain(new_rules)
        inserts: list[str] = []
        deletes: list[str] = []
        for chain in sorted(new.keys() | old.keys()):
            added = _insertions(old.get(chain, []), new.get(chain, []))
            if added is not None:
                inserts += [f"-I {chain} {pos} {rule}" for pos, rule in added]
                continue
            gone = _insertions(new.get(chain, []), old.get(chain, []))  # the other way round
            if gone is None:
                return None
            deletes += [f"-D {chain} {rule}" for _, rule in gone]
        if inserts or deletes:
            out += [f"*{table}", *deletes, *sorted(inserts, key=_position_order), "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def _position_order(line: str) -> tuple[str, int]:
    # Per chain, lower positions first: each insertion's position counts the ones before it.
    _, chain, pos = line.split(maxsplit=3)[:3]
    return chain, int(pos)


def teardown_argvs(chains: Chains) -> list[list[str]]:
    """Flush then delete the owned chains (run after the jumps into them are gone)."""
    flush = [iptables_argv(t, "-F", c) for t, c in chains.owned()]
    delete = [iptables_argv(t, "-X", c) for t, c in chains.owned()]
    return flush + delete


def outbound_reject_rule(bridge: str, outside_ifname: str, comment: str) -> list[str]:
    """FORWARD rule test daemons insert so nothing from skiff's bridges leaves the machine
    (``bridge`` may end with ``+``, iptables' interface wildcard)."""
    return ["-i", bridge, "-o", outside_ifname, "-m", "comment", "--comment", comment, "-j", "REJECT"]


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


CommandRunner = Callable[[Sequence[str], bytes | None], Awaitable[CommandResult]]


async def run_command(argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return CommandResult(proc.returncode, out, err)


class Firewall:
    """Desired state (bridges, port forwards) rendered into skiff's chains on every change.

    The chains and jumps are created with the first bridge and stay, emptied, when the last one
    goes, until ``close`` (daemon shutdown), as dockerd keeps its chains: setting them up and
    tearing them down again costs about 13 and 25 iptables processes (0.1 and 0.3-0.5 s here).
    Changes are serialised; a failed addition restores the previous desired state and raises
    ``errdefs.Internal`` with iptables' message.

    Removals change the desired state at once and reach the kernel in the background, in order
    with every later change (``settle`` waits for them): iptables-nft deletes cost 15-30 ms each
    (the kernel commits a deletion much more slowly than an insertion), which a `docker stop` of
    a container with published ports and every `docker network rm` would otherwise wait for.
    Nothing depends on their being gone: a removed network's bridge has no addresses left and a
    stopped container's forwards point at an address no endpoint holds; an address given out
    again is forwarded only after the pending deletions, which run first. A failed deletion is
    logged, and the next change rewrites the chains.

    ``enabled=False`` (dockerd's --iptables=false) keeps the books but runs nothing;
    ``outbound_reject`` see ``filter_rules``.
    """

    def __init__(
        self,
        runner: CommandRunner = run_command,
        chains: Chains | None = None,
        *,
        enabled: bool = True,
        outbound_reject: str | None = None,
    ) -> None:
        if outbound_reject is not None:
            _check_ifname(outbound_reject)
        self.chains = chains or Chains()
        self.enabled = enabled
        self.outbound_reject = outbound_reject
        self._run = runner
        self._networks: dict[str, BridgeRules] = {}
        self._forwards: list[PortForward] = []
        self._active = False
        self._lock: asyncio.Lock | None = None
        # What the kernel's chains were last written for; None: unknown (rewrite them next).
        self._written: tuple[list[BridgeRules], list[PortForward]] | None = None
        self._pending: asyncio.Task[None] | None = None
        self._dirty = False  # removals the kernel may not have seen yet

    @property
    def networks(self) -> list[BridgeRules]:
        return list(self._networks.values())

    @property
    def forwards(self) -> list[PortForward]:
        return list(self._forwards)

    def render(self) -> str:
        return render_restore(self.chains, self.networks, self._forwards, self.outbound_reject)

    async def add_network(self, rules: BridgeRules) -> None:
        async with self._locked():
            old = self._networks.get(rules.bridge)
            self._networks[rules.bridge] = rules
            try:
                if not self._active:
                    await self._setup()
                else:
                    await self._apply()
            except BaseException:
                if self._networks.get(rules.bridge) is rules:  # not removed meanwhile
                    if old is None:
                        del self._networks[rules.bridge]
                    else:
                        self._networks[rules.bridge] = old
                raise

    async def remove_network(self, bridge: str) -> None:
        # Not behind the lock, which may be held while an earlier change runs.
        if self._networks.pop(bridge, None) is None:
            return
        self._forwards = [f for f in self._forwards if f.bridge != bridge]
        self._apply_later()

    async def add_forwards(self, forwards: Sequence[PortForward]) -> None:
        async with self._locked():
            for f in forwards:
                if f.bridge not in self._networks:
                    raise errdefs.NotFound(f"no firewall rules for bridge {f.bridge}")
            self._forwards += forwards
            try:
                await self._apply()
            except BaseException:
                for f in forwards:  # removals may have run meanwhile: take back only these
                    with contextlib.suppress(ValueError):
                        self._forwards.remove(f)
                raise

    async def remove_forwards(self, forwards: Sequence[PortForward]) -> None:
        gone = set(forwards)
        kept = [f for f in self._forwards if f not in gone]
        if len(kept) == len(self._forwards) or not self._active:
            return
        self._forwards = kept
        self._apply_later()

    async def settle(self) -> None:
        """Wait until the kernel's chains hold every change made so far."""
        while self._pending is not None and not self._pending.done():
            await asyncio.shield(self._pending)

    def _apply_later(self) -> None:
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._apply_pending())

    async def _apply_pending(self) -> None:
        async with self._locked():
            # Removals made while an apply runs are picked up by another round.
            while self._dirty and self._active:
                self._dirty = False
                try:
                    await self._apply()
                except errdefs.EngineError as err:
                    log.warning("firewall: %s", err.message)

    async def close(self) -> None:
        """Remove every rule and chain skiff made (daemon shutdown). Chains a crash left behind need
        no call: the first network's set-up rewrites them and does not duplicate the jumps."""
        async with self._locked():
            self._networks.clear()
            self._forwards.clear()
            if self._active:
                await self._teardown()
        await self.settle()  # a queued round of removals finds nothing left to do

    async def reset(self) -> None:
        """Remove this prefix's jumps and chains whether or not this object made them: what a
        crashed daemon of the same prefix left (``network.reconcile``). Runs even when disabled,
        since a predecessor may have run with iptables on."""
        async with self._locked():
            self._networks.clear()
            self._forwards.clear()
            await self._teardown(force=True)

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _check(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        result = await self._run(argv, stdin)
        if result.returncode != 0:
            detail = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
            raise errdefs.Internal(f"iptables failed: {' '.join(argv)}: {detail}")
        return result

    def _state(self) -> tuple[list[BridgeRules], list[PortForward]]:
        return self.networks, self.forwards

    async def _apply(self) -> None:
        """Make the kernel's chains match the desired state: by a delta from what they were last
        written for when there is one, else by rewriting them."""
        if not self.enabled:
            return
        state, written = self._state(), self._written
        self._written = None
        if written is not None:
            delta = render_delta(self.chains, written, state, self.outbound_reject)
            # A chain changed behind skiff's back may refuse a delta; the rewrite repairs it.
            if delta == "" or (
                delta is not None and (await self._run(restore_argv(), delta.encode())).returncode == 0
            ):
                self._written = state
                return
        networks, forwards = state
        rendered = render_restore(self.chains, networks, forwards, self.outbound_reject)
        await self._check(restore_argv(), rendered.encode())
        self._written = state

    async def _setup(self) -> None:
        if not self.enabled:
            self._active = True
            return
        user = self.chains.user
        created = await self._run(iptables_argv("filter", "-N", user), None)
        if created.returncode == 0:
            await self._check(iptables_argv("filter", "-A", user, "-j", "RETURN"))
        await self._apply()  # declares (and so creates) the owned chains before anything jumps to them
        jumps = jump_rules(self.chains)
        for rule in jumps:
            if rule.first:
                await self._delete_all(rule)
        for rule in reversed([r for r in jumps if r.first]):
            await self._check(jump_argv(rule, "add"))
        for rule in jumps:
            if not rule.first and (await self._run(jump_argv(rule, "-C"), None)).returncode != 0:
                await self._check(jump_argv(rule, "add"))
        self._active = True

    async def _teardown(self, *, force: bool = False) -> None:
        if not self.enabled and not force:
            self._active = False
            return
        user_is_ours = await self._user_chain_is_ours()
        for rule in jump_rules(self.chains):
            if rule.args[-1] != self.chains.user or user_is_ours:
                await self._delete_all(rule)
        for argv in teardown_argvs(self.chains):
            await self._run(argv, None)  # a chain that is already gone is fine
        if user_is_ours:
            await self._run(iptables_argv("filter", "-F", self.chains.user), None)
            await self._run(iptables_argv("filter", "-X", self.chains.user), None)
        self._active = False
        self._written = None

    async def _delete_all(self, rule: JumpRule) -> None:
        for _ in range(16):  # a crash may have left duplicates
            if (await self._run(jump_argv(rule, "-D"), None)).returncode != 0:
                return

    async def _user_chain_is_ours(self) -> bool:
        """SKIFF-USER goes only while it holds nothing but the RETURN skiff put there."""
        listing = await self._run(iptables_argv("filter", "-S", self.chains.user), None)
        if listing.returncode != 0:
            return False
        lines = [ln.strip() for ln in listing.stdout.decode().splitlines() if ln.strip()]
        return lines == [f"-N {self.chains.user}", f"-A {self.chains.user} -j RETURN"]
