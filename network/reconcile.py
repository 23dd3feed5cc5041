"""Which kernel objects belong to one skiff daemon, and removing what a crashed one left.

Several skiff daemons may run on one host (a dev daemon and the test daemons of concurrent test
runs). Each has marks of its own, derived deterministically from its configuration so that a
restarted daemon finds and cleans what its crashed predecessor left:

- an iptables chain prefix: ``SKIFF`` for the default bridge name ``skiff0`` (the daemon a user
  runs), else ``SK`` and 8 hex digits of a hash of the default bridge name (with ``-b none``, of
  the data root). The bridge name is the right key: two daemons sharing it would already fight
  over the bridge itself, so it is one per daemon on a host. Ten characters at most, because
  ``<prefix>-ISOLATION-STAGE-2`` must fit iptables' 28; ``SK`` plus hex can never start with
  ``SKIFF`` nor with the network tests' ``SKT``;
- a link alias ``skiff:<prefix>`` that the bridge driver sets on every bridge and host-side veth
  it makes (``network.links``), since user bridges (``br-<netid12>``) and veths (``veth<7 hex>``)
  carry no daemon in their names.

Separate chains per daemon were chosen over reference-counting one shared set of SKIFF chains:
a count kept in the kernel (or a file) goes wrong exactly when a daemon crashes, which is the
case this module exists for, and one daemon's ``iptables-restore`` of shared chains would rewrite
the other daemon's rules. With a prefix each daemon rewrites and removes only its own chains, and
a crashed daemon's leftovers are unambiguous.

``reconcile`` runs at daemon start, before any network is made, and in the test daemon's
teardown. It uses the ``ip`` and ``iptables-save`` commands rather than pyroute2 so a daemon that
never makes a bridge does not load pyroute2: when nothing is left over it costs two short
subprocesses. Sandboxes (network namespaces under the exec root) are the engine's to clean.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from network.firewall import Chains, CommandRunner, Firewall, run_command

log = logging.getLogger(__name__)

DEFAULT_BRIDGE = "skiff0"
DEFAULT_PREFIX = "SKIFF"
ALIAS_PREFIX = "skiff:"


@dataclass(frozen=True)
class DaemonMarks:
    prefix: str

    @property
    def chains(self) -> Chains:
        return Chains(self.prefix)

    @property
    def link_alias(self) -> str:
        return f"{ALIAS_PREFIX}{self.prefix}"

    def chain_names(self) -> set[str]:
        """Every chain this daemon may make, in either table (the USER chain included)."""
        return {chain for _, chain in self.chains.owned()} | {self.chains.user}


def daemon_marks(default_bridge: str | None, data_root: Path) -> DaemonMarks:
    """``default_bridge`` None is ``-b none``; ``data_root`` should be absolute."""
    if default_bridge == DEFAULT_BRIDGE:
        return DaemonMarks(DEFAULT_PREFIX)
    key = f"bridge:{default_bridge}" if default_bridge else f"data-root:{data_root}"
    return DaemonMarks("SK" + hashlib.sha256(key.encode()).hexdigest()[:8].upper())


@dataclass
class Leftovers:
    links: list[str] = field(default_factory=list)  # bridges last, in the order they are removed
    chains: list[str] = field(default_factory=list)  # "table:chain", declared or jumped to

    def __bool__(self) -> bool:
        return bool(self.links or self.chains)


def links_with_alias(ip_json: bytes, alias: str) -> list[str]:
    """From ``ip -j -d link show``: the links carrying ``alias``, veths before bridges (a bridge's
    removal does not take its ports with it)."""
    found: list[tuple[bool, str]] = []
    for link in json.loads(ip_json or b"[]"):
        if link.get("ifalias") == alias and link.get("ifname"):
            kind = (link.get("linkinfo") or {}).get("info_kind")
            found.append((kind == "bridge", str(link["ifname"])))
    return [name for _, name in sorted(found)]


def chains_in_save(save: str, names: set[str]) -> list[str]:
    """From ``iptables-save``: ``table:chain`` for each of ``names`` declared or jumped to."""
    found: list[str] = []
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain in names:
                found.append(f"{table}:{chain}")
        elif line.startswith("-A "):
            words = line.split()
            if "-j" in words[:-1] and words[words.index("-j") + 1] in names:
                found.append(f"{table}:{words[words.index('-j') + 1]}")
    return list(dict.fromkeys(found))


async def find_leftovers(marks: DaemonMarks, runner: CommandRunner = run_command) -> Leftovers:
    out = Leftovers()
    listing = await _try(runner, ["ip", "-j", "-d", "link", "show"])
    if listing is not None:
        out.links = links_with_alias(listing, marks.link_alias)
    save = await _try(runner, ["iptables-save"])
    if save is not None:
        out.chains = chains_in_save(save.decode(errors="replace"), marks.chain_names())
    return out


async def reconcile(marks: DaemonMarks, runner: CommandRunner = run_command) -> Leftovers:
    """Remove this daemon's leftover links (and with them their routes and veth peers), then its
    chains and the jumps into them. Returns what was found; failures are logged, never raised:
    a daemon that cannot clean up still starts, and the driver adopts a stale bridge."""
    found = await find_leftovers(marks, runner)
    for name in found.links:
        res = await runner(["ip", "link", "del", "dev", name], None)
        if res.returncode != 0 and b"Cannot find device" not in res.stderr:  # a veth gone with its peer
            log.warning("reconcile: cannot remove %s: %s", name, res.stderr.decode(errors="replace").strip())
    if found.chains:
        try:
            await Firewall(runner, marks.chains).reset()
        except Exception as e:
            log.warning("reconcile: cannot remove the %s chains: %s", marks.prefix, e)
    if found:
        log.info("removed what a previous daemon left: links %s, chains %s", found.links, found.chains)
    return found


async def _try(runner: CommandRunner, argv: Sequence[str]) -> bytes | None:
    try:
        res = await runner(argv, None)
    except FileNotFoundError:
        return None  # no iptables on this host: there can be no rules either
    if res.returncode != 0:
        log.warning("reconcile: %s: %s", " ".join(argv), res.stderr.decode(errors="replace").strip())
        return None
    return res.stdout
