"""Snapshots of the host's network state, and what of it belongs to skiff's test daemons.

The compat suite snapshots links (``ip -o link``), routes (``ip route``, ``ip -6 route``) and the
filter and nat tables (``iptables-save``, no counters) before the session and again after its
test daemons stopped, and asserts that the parts belonging to those daemons are the same.

Only the daemons' own parts are compared, never the whole host: this machine is shared by other
agents whose network tests and test daemons make and remove bridges, veths, routes and chains at
any moment, and the reference dockerd's bridges and rules come and go when it is started or
stopped, so a whole-host comparison would fail for reasons that have nothing to do with skiff.
A test daemon's parts are recognisable without guessing (``tools/testdaemon.py``):

- links named after its default bridge, or carrying its link alias (every bridge, user bridges
  ``br-<id>`` included, and every host-side veth the daemon makes);
- routes through one of those links (a route cannot outlive its device);
- iptables lines naming one of its chains (its jumps from the built-in chains included) or its
  default bridge.

Addresses are deliberately not used: a test daemon's pool is a random /16 of 32, so another
agent's test daemon may share it, and its routes and rules would then look like ours.

What this cannot see is a change skiff makes to something not its own (another engine's rule,
say); skiff's firewall only ever writes into its own chains and the jumps to them, which are
covered. Named network namespaces (``ip netns list``, /run/netns) are not skiff's: its sandboxes
are bind mounts under the exec root, which the test daemon lists when the process has exited
(``SkiffDaemon.leftover_sandboxes``), before its forced clean-up.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

_COUNTERS = re.compile(r"\[\d+:\d+\]")


class DaemonLike(Protocol):
    """What of a ``testdaemon.SkiffDaemon`` the comparison reads."""

    bridge: str

    @property
    def link_alias(self) -> str: ...

    @property
    def chain_names(self) -> set[str]: ...


@dataclass(frozen=True)
class HostState:
    links: tuple[str, ...]
    routes: tuple[str, ...]
    rules: tuple[str, ...]  # "filter: -A ..." / "nat: :CHAIN - [0:0]" with counters blanked


def _run(argv: Sequence[str]) -> list[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return [ln.rstrip() for ln in done.stdout.splitlines() if ln.strip()]


def capture() -> HostState:
    links = _run(["ip", "-o", "link", "show"])
    routes = [f"v4: {ln}" for ln in _run(["ip", "route", "show"])]
    routes += [f"v6: {ln}" for ln in _run(["ip", "-6", "route", "show"])]
    rules: list[str] = []
    for table in ("filter", "nat"):
        for line in _run(["iptables-save", "-t", table]):
            if not line.startswith("#"):
                rules.append(f"{table}: {_COUNTERS.sub('[0:0]', line)}")
    return HostState(tuple(links), tuple(routes), tuple(rules))


def link_name(line: str) -> str:
    """``3: br-abc@if2: <...> ...`` -> ``br-abc``."""
    return line.split(":", 2)[1].strip().split("@")[0]


@dataclass(frozen=True)
class Marks:
    bridges: frozenset[str]
    aliases: frozenset[str]
    chains: frozenset[str]

    @classmethod
    def of(cls, daemons: Iterable[DaemonLike]) -> Marks:
        ds = list(daemons)
        return cls(
            frozenset(d.bridge for d in ds),
            frozenset(d.link_alias for d in ds),
            frozenset(c for d in ds for c in d.chain_names),
        )

    def owns_link(self, line: str) -> bool:
        words = line.replace("\\", " ").split()
        alias = words[words.index("alias") + 1] if "alias" in words[:-1] else None
        return link_name(line) in self.bridges or alias in self.aliases

    @staticmethod
    def owns_route(line: str, links: set[str]) -> bool:
        words = line.split()
        return "dev" in words[:-1] and words[words.index("dev") + 1] in links

    def owns_rule(self, line: str) -> bool:
        return any(w in self.chains or w in self.bridges for w in line.split())


def owned(state: HostState, marks: Marks, links: set[str]) -> dict[str, set[str]]:
    return {
        "links": {link_name(ln) for ln in state.links if marks.owns_link(ln)},
        "routes": {ln for ln in state.routes if marks.owns_route(ln, links)},
        "rules": {ln for ln in state.rules if marks.owns_rule(ln)},
    }


def differences(before: HostState, after: HostState, daemons: Iterable[DaemonLike]) -> list[str]:
    """What the daemons' parts of the host gained or lost between the snapshots, as readable lines."""
    marks = Marks.of(daemons)
    if not marks.bridges:
        return []
    names = {link_name(ln) for ln in (*before.links, *after.links) if marks.owns_link(ln)}
    old, new = owned(before, marks, names), owned(after, marks, names)
    out: list[str] = []
    for kind in ("links", "routes", "rules"):
        out += [f"{kind} left behind: {x}" for x in sorted(new[kind] - old[kind])]
        out += [f"{kind} gone: {x}" for x in sorted(old[kind] - new[kind])]
    return out
