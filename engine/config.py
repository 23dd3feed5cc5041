"""Daemon configuration: flags and config-file keys, named as dockerd names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path

from network.ipam import AddressPool as AddressPool  # re-exported: api/flags parses pools with it

DEFAULT_BRIDGE = "skiff0"


@dataclass(frozen=True)
class DaemonConfig:
    hosts: tuple[str, ...] = ("unix:///run/skiff/skiff.sock",)
    data_root: Path = Path("/var/lib/skiff")
    exec_root: Path = Path("/run/skiff")
    group: str | None = None
    pidfile: Path | None = None
    log_level: str = "info"
    default_runtime: str = "runc"
    runtimes: dict[str, str] = field(default_factory=lambda: {"runc": "runc"})
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    # Networking, as dockerd's --bip, --default-address-pool, -b, --ip-forward and --iptables.
    bip: IPv4Interface | None = None  # the default bridge's gateway with its prefix (172.30.0.1/16)
    default_address_pools: tuple[AddressPool, ...] = ()  # empty: libnetwork's defaults
    bridge: str | None = DEFAULT_BRIDGE  # None: no default bridge network (dockerd's -b none)
    ip_forward: bool = True
    iptables: bool = True
    # skiff only (test daemons): REJECT forwarding from every skiff bridge to this interface.
    outbound_reject_interface: str | None = None
