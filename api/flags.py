"""skiffd's command line and ``daemon.json``, spelled and checked as dockerd spells and checks them.

``load_config(argv)`` returns the ``DaemonConfig`` or raises ``ConfigError`` with the message to
print. As in dockerd, a setting may come from a flag or from the configuration file but not
both, and unknown file keys are refused rather than silently ignored.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import DaemonConfig
from engine.system import engine_version

DEFAULT_HOST = "unix:///run/skiff/skiff.sock"
DEFAULT_CONFIG_FILE = Path("/etc/skiff/daemon.json")
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic")
STOCK_RUNTIME = "runc"


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
    )
