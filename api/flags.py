"""skiffd's command line and ``daemon.json``, spelled and checked as dockerd spells and checks them.

``load_config(argv)`` returns the ``DaemonConfig`` or raises ``ConfigError`` with the message to
print. As in dockerd, a setting may come from a flag or from the configuration file but not
both, and unknown file keys are refused rather than silently ignored.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import errdefs
from engine.config import DEFAULT_BRIDGE, AddressPool, DaemonConfig
from engine.system import engine_version

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
DEFAULT_CONFIG_FILE = Path("/etc/skiff/daemon.json")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic")
STOCK_RUNTIME = "runc"
NO_BRIDGE = "none"  # dockerd's -b none: no default bridge network
_IFNAME = re.compile(r"[^\s/:]{1,15}")  # what the kernel takes as an interface name
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class ConfigError(Exception):
    pass


def go_value(value: Any) -> str:
    """Go's %v of a decoded JSON value, for dockerd's conflict message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f'invalid value for "{key}": expected a string, got {json.dumps(value)}')
    return value


def _str_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'invalid value for "{key}": expected a list of strings, got {json.dumps(value)}')
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f'invalid value for "{key}": expected a boolean, got {json.dumps(value)}')
    return value


def _address_pools(key: str, value: Any) -> list[str]:
    """dockerd's ``[{"base": "10.10.0.0/16", "size": 24}]``, as the flag's ``base=...,size=...`` texts."""
    if not isinstance(value, list):
        raise ConfigError(f'invalid value for "{key}": expected a list, got {json.dumps(value)}')
    out: list[str] = []
    for pool in value:
        if (
            not isinstance(pool, dict)
            or set(pool) != {"base", "size"}
            or not isinstance(pool["base"], str)
            or not isinstance(pool["size"], int)
            or isinstance(pool["size"], bool)
        ):
            raise ConfigError(
                f'invalid value for "{key}": expected {{"base": "<CIDR>", "size": <int>}}, '
                f"got {json.dumps(pool)}"
            )
        out.append(f"base={pool['base']},size={pool['size']}")
    return out


def go_bool(text: str) -> bool:
    """A boolean flag's value as Go's strconv.ParseBool reads it (``--iptables=false``)."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _runtimes(key: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f'invalid value for "{key}": expected an object, got {json.dumps(value)}')
    out: dict[str, str] = {}
    for name, spec in value.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise ConfigError(f'invalid value for "{key}": runtime {name} needs a "path"')
        out[name] = spec["path"]
    return out


@dataclass(frozen=True)
class Directive:
    """One setting: its daemon.json key, the argparse dest of its flag, how to read the file value."""

    key: str
    dest: str
    read: Callable[[str, Any], Any]


DIRECTIVES = (
    Directive("hosts", "hosts", _str_list),
    Directive("data-root", "data_root", _str),
    Directive("exec-root", "exec_root", _str),
    Directive("group", "group", _str),
    Directive("pidfile", "pidfile", _str),
    Directive("log-level", "log_level", _str),
    Directive("insecure-registries", "insecure_registries", _str_list),
    Directive("registry-mirrors", "registry_mirrors", _str_list),
    Directive("dns", "dns", _str_list),
    Directive("labels", "labels", _str_list),
    Directive("default-runtime", "default_runtime", _str),
    Directive("runtimes", "add_runtime", _runtimes),
    Directive("bip", "bip", _str),
    Directive("default-address-pools", "default_address_pools", _address_pools),
    Directive("bridge", "bridge", _str),
    Directive("ip-forward", "ip_forward", _bool),
    Directive("iptables", "iptables", _bool),
    Directive("outbound-reject-interface", "outbound_reject_interface", _str),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skiffd", description="A Docker-compatible container engine.")
    # Every default is None so that "given on the command line" can be told apart.
    p.add_argument("-H", "--host", dest="hosts", action="append", metavar="HOST", help="unix:// socket(s)")
    p.add_argument("--data-root", dest="data_root", help="root of persistent state (/var/lib/skiff)")
    p.add_argument("--exec-root", dest="exec_root", help="root of runtime state (/run/skiff)")
    p.add_argument("-G", "--group", dest="group", help='group of the socket ("docker" if it exists)')
    p.add_argument("-p", "--pidfile", dest="pidfile", help="pid file (<exec-root>/skiffd.pid)")
    p.add_argument("-l", "--log-level", dest="log_level", choices=LOG_LEVELS, help="logging level (info)")
    p.add_argument(
        "--config-file", dest="config_file", help=f"daemon configuration file ({DEFAULT_CONFIG_FILE})"
    )
    p.add_argument("--add-runtime", dest="add_runtime", action="append", metavar="NAME=PATH")
    p.add_argument("--default-runtime", dest="default_runtime", help="default OCI runtime (runc)")
    p.add_argument("--insecure-registry", dest="insecure_registries", action="append", metavar="REGISTRY")
    p.add_argument("--registry-mirror", dest="registry_mirrors", action="append", metavar="URL")
    p.add_argument("--dns", dest="dns", action="append", metavar="IP")
    p.add_argument("--label", dest="labels", action="append", metavar="KEY=VALUE")
    p.add_argument("--bip", dest="bip", metavar="CIDR", help="default bridge's address (172.30.0.1/16)")
    p.add_argument(
        "--default-address-pool",
        dest="default_address_pools",
        action="append",
        metavar="base=CIDR,size=N",
        help="pool that automatic subnets are cut from (repeatable)",
    )
    p.add_argument(
        "-b",
        "--bridge",
        dest="bridge",
        help=f'name of the default bridge ({DEFAULT_BRIDGE}; "none": no bridge)',
    )
    for flag, dest, what in (
        ("--ip-forward", "ip_forward", "set net.ipv4.ip_forward=1 with the first bridge network (true)"),
        ("--iptables", "iptables", "add skiff's iptables rules (true)"),
    ):
        p.add_argument(flag, dest=dest, nargs="?", const=True, type=go_bool, metavar="BOOL", help=what)
    p.add_argument(
        "--outbound-reject-interface",
        dest="outbound_reject_interface",
        metavar="IFNAME",
        help="skiff only: reject forwarding from skiff's bridges to this interface (test daemons)",
    )
    p.add_argument("-v", "--version", action="version", version=f"skiffd version {engine_version()}")
    return p


def _read_config_file(path: Path, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"open {path}: no such file or directory") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError("the configuration file must hold a JSON object")
    return data


def _merge_file(flags: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    known = {d.key: d for d in DIRECTIVES}
    unknown = [key for key in data if key not in known]
    if unknown:
        raise ConfigError(
            "the following directives don't match any configuration option: " + ", ".join(unknown)
        )
    conflicts = [
        f"{key}: (from flag: {go_value(getattr(flags, known[key].dest))}, from file: {go_value(value)})"
        for key, value in data.items()
        if getattr(flags, known[key].dest) is not None
    ]
    if conflicts:
        raise ConfigError(
            "the following directives are specified both as a flag and in the configuration file: "
            + ", ".join(conflicts)
        )
    return {known[key].dest: known[key].read(key, value) for key, value in data.items()}


def _parse_host(host: str) -> str:
    scheme, sep, address = host.partition("://")
    if not sep or scheme != "unix":
        raise ConfigError(f"only unix:// hosts are supported: {host}")
    if address == "":
        return DEFAULT_HOST
    if not address.startswith("/"):
        raise ConfigError(f"unix socket path must be absolute: {host}")
    return f"unix://{address}"


def _parse_runtimes(values: list[str] | dict[str, str] | None) -> dict[str, str]:
    runtimes = {STOCK_RUNTIME: STOCK_RUNTIME}
    pairs = values.items() if isinstance(values, dict) else (v.partition("=")[::2] for v in values or [])
    for name, path in pairs:
        if not name or not path:
            raise ConfigError(f"invalid runtime: expected NAME=PATH, got {name}={path}")
        if name == STOCK_RUNTIME:
            raise ConfigError(f"runtime name '{name}' is reserved")
        runtimes[name] = path
    return runtimes


def _check_values(settings: dict[str, Any]) -> None:
    level = settings.get("log_level")
    if level is not None and level not in LOG_LEVELS:
        raise ConfigError(f"unable to parse logging level: {level}")
    for label in settings.get("labels") or []:
        if "=" not in label:
            raise ConfigError(f"bad attribute format: {label}")
    for server in settings.get("dns") or []:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise ConfigError(f"IP address is not correctly formatted: {server}") from None
    for registry in settings.get("insecure_registries") or []:
        if "://" in registry:
            raise ConfigError(f"insecure registry {registry} should not contain '://'")
    for mirror in settings.get("registry_mirrors") or []:
        scheme = urllib.parse.urlsplit(mirror).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f'invalid mirror: unsupported scheme "{scheme}" in "{mirror}"')


def _parse_bip(value: str) -> ipaddress.IPv4Interface:
    try:
        if "/" not in value:
            raise ValueError(value)
        bip = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ConfigError(f"invalid CIDR address: {value}") from None
    net = bip.network
    if net.prefixlen < 31 and bip.ip in (net.network_address, net.broadcast_address):
        raise ConfigError(f"--bip {value}: the bridge needs a host address of {net}, not {bip.ip}")
    return bip


def _parse_pools(values: Sequence[str]) -> tuple[AddressPool, ...]:
    pools: list[AddressPool] = []
    for value in values:
        try:
            pools.append(AddressPool.parse(value))
        except errdefs.EngineError as exc:
            raise ConfigError(
                f'invalid argument "{value}" for "--default-address-pool" flag: {exc.message}'
            ) from None
    return tuple(pools)


def _network_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The DaemonConfig fields of the bridge network; -b with --bip is allowed, unlike dockerd:
    skiff makes the named bridge itself, so it needs an address as much as skiff0 does."""
    bridge = settings.get("bridge", DEFAULT_BRIDGE)
    if bridge != NO_BRIDGE and not _IFNAME.fullmatch(bridge):
        raise ConfigError(f"invalid bridge name: {bridge!r}")
    bip = _parse_bip(settings["bip"]) if "bip" in settings else None
    if bridge == NO_BRIDGE and bip is not None:
        raise ConfigError(
            "You specified -b none & --bip: --bip configures the default bridge, which -b none disables"
        )
    iptables = settings.get("iptables", True)
    reject = settings.get("outbound_reject_interface")
    if reject is not None and (not iptables or not _IFNAME.fullmatch(reject)):
        raise ConfigError(
            f"invalid outbound-reject-interface {reject!r}: needs an interface name and --iptables=true"
        )
    return {
        "bip": bip,
        "default_address_pools": _parse_pools(settings.get("default_address_pools") or ()),
        "bridge": None if bridge == NO_BRIDGE else bridge,
        "ip_forward": settings.get("ip_forward", True),
        "iptables": iptables,
        "outbound_reject_interface": reject,
    }


def load_config(argv: Sequence[str] | None = None) -> DaemonConfig:
    flags = build_parser().parse_args(argv)
    explicit_file = flags.config_file is not None
    config_file = Path(flags.config_file) if explicit_file else DEFAULT_CONFIG_FILE
    settings = {d.dest: getattr(flags, d.dest) for d in DIRECTIVES if getattr(flags, d.dest) is not None}
    try:
        settings.update(_merge_file(flags, _read_config_file(config_file, explicit_file)))
    except ConfigError as exc:
        raise ConfigError(f"unable to configure the daemon with file {config_file}: {exc}") from None
    _check_values(settings)

    runtimes = _parse_runtimes(settings.get("add_runtime"))
    default_runtime = settings.get("default_runtime", STOCK_RUNTIME)
    if default_runtime not in runtimes:
        raise ConfigError(f"specified default runtime '{default_runtime}' does not exist")
    exec_root = Path(settings.get("exec_root", "/run/skiff")).absolute()
    return DaemonConfig(
        hosts=tuple(dict.fromkeys(_parse_host(h) for h in settings.get("hosts") or [DEFAULT_HOST])),
        data_root=Path(settings.get("data_root", "/var/lib/skiff")).absolute(),
        exec_root=exec_root,
        group=settings.get("group"),
        pidfile=Path(settings["pidfile"]).absolute() if "pidfile" in settings else exec_root / "skiffd.pid",
        log_level=settings.get("log_level", "info"),
        default_runtime=default_runtime,
        runtimes=runtimes,
        insecure_registries=tuple(settings.get("insecure_registries") or ()),
        registry_mirrors=tuple(settings.get("registry_mirrors") or ()),
        dns=tuple(settings.get("dns") or ()),
        labels=tuple(settings.get("labels") or ()),
        **_network_settings(settings),
    )
