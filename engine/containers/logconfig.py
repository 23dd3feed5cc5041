"""HostConfig.LogConfig and ``/containers/{id}/logs`` parameters, checked the way dockerd checks them.

Two moments, two error classes, as in dockerd 20.10: ``validate_log_config`` runs at create
(``logger.ValidateLogOpts``: unknown driver or option → 400), ``parse_log_config`` runs at start
(``jsonfilelog.New``: a bad ``max-size``/``max-file``/``compress`` value → 500 "failed to initialize
logging driver: …"). skiff implements the ``json-file`` and ``none`` drivers; other dockerd
built-ins are refused at create rather than accepted and silently not logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine import errdefs
from engine.containers.gofmt import quote

DEFAULT_LOG_DRIVER = "json-file"
SUPPORTED_DRIVERS = frozenset({"json-file", "none"})
# Drivers compiled into dockerd; any other name is looked up as a plugin, which skiff has none of.
_DOCKERD_BUILTINS = frozenset(
    {"json-file", "local", "journald", "syslog", "gelf", "fluentd", "awslogs", "splunk", "etwlogs", "gcplogs",
     "logentries", "none"}
)  # fmt: skip
_JSON_FILE_OPTS = frozenset(
    {"max-file", "max-size", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
)
# Options dockerd handles for every driver (log mode, ring buffer, dual-logging cache).
_GENERIC_OPTS = frozenset(
    {"mode", "max-buffer-size", "cache-disabled", "cache-max-size", "cache-max-file", "cache-compress"}
)
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)*) ?([kmgtp])?i?b?", re.IGNORECASE)
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}  # fmt: skip
_INT64 = 1 << 63


@dataclass(frozen=True)
class LogOptions:
    """A container's effective log configuration, parsed for the driver."""

    driver: str
    max_size: int | None = None  # bytes; None = never rotate
    max_file: int = 1
    compress: bool = False
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def readable(self) -> bool:
        return self.driver != "none"


def validate_log_config(log_type: str, config: Mapping[str, str] | None) -> None:
    """Create-time checks (dockerd ``ValidateLogOpts``); raises errdefs.InvalidParameter."""
    name = log_type or DEFAULT_LOG_DRIVER
    cfg = dict(config or {})
    if name == "none":
        return
    mode = cfg.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise errdefs.InvalidParameter(f"logger: logging mode not supported: {mode}")
    if "max-buffer-size" in cfg:
        if mode != "non-blocking":
            raise errdefs.InvalidParameter(
                "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
            )
        try:
            _parse_size(cfg["max-buffer-size"], _BINARY)
        except ValueError as exc:
            raise errdefs.InvalidParameter(f"error parsing option max-buffer-size: {exc}") from None
    disabled = cfg.get("cache-disabled", "")
    if disabled and disabled not in _GO_BOOL:
        raise errdefs.InvalidParameter(f"invalid value for option cache-disabled: {disabled}")
    if name not in _DOCKERD_BUILTINS:
        raise errdefs.InvalidParameter(
            f"error looking up logging plugin {name}: plugin {quote(name)} not found"
        )
    if name not in SUPPORTED_DRIVERS:
        raise errdefs.InvalidParameter(f"logger: no log driver named '{name}' is registered")
    for key in cfg:
        if key not in _GENERIC_OPTS and key not in _JSON_FILE_OPTS:
            raise errdefs.InvalidParameter(f"unknown log opt '{key}' for json-file log driver")


def parse_log_config(log_type: str, config: Mapping[str, str] | None) -> LogOptions:
    """Start-time parse (dockerd ``jsonfilelog.New``); bad values raise errdefs.Internal (dockerd's 500)."""
    validate_log_config(log_type, config)
    name = log_type or DEFAULT_LOG_DRIVER
    cfg = dict(config or {})
    if name == "none":
        return LogOptions("none", config=cfg)
    try:
        return _parse_json_file(cfg)
    except ValueError as exc:
        raise errdefs.Internal(f"failed to initialize logging driver: {exc}") from None


def _parse_json_file(cfg: dict[str, str]) -> LogOptions:
    max_size: int | None = None
    if "max-size" in cfg:
        max_size = _parse_size(cfg["max-size"], _DECIMAL)
        if max_size <= 0:
            raise ValueError("max-size must be a positive number")
    max_file = 1
    if "max-file" in cfg:
        max_file = _go_int(cfg["max-file"], "strconv.Atoi")
        if max_file < 1:
            raise ValueError("max-file cannot be less than 1")
    compress = False
    if "compress" in cfg:
        if cfg["compress"] not in _GO_BOOL:
            raise ValueError(f"strconv.ParseBool: parsing {quote(cfg['compress'])}: invalid syntax")
        compress = _GO_BOOL[cfg["compress"]]
        if compress and (max_file == 1 or max_size is None):
            raise ValueError("compress cannot be true when max-file is less than 2 or max-size is not set")
    for key in ("labels-regex", "env-regex"):
        if cfg.get(key):
            try:
                re.compile(cfg[key])
            except re.error as exc:
                raise ValueError(f"error parsing regexp: {exc}") from None
    return LogOptions("json-file", max_size, max_file, compress, cfg)


def extra_attributes(
    config: Mapping[str, str], labels: Mapping[str, str], env: Sequence[str]
) -> dict[str, str]:
    """The ``attrs`` every entry carries, from the ``labels``/``env`` (and ``-regex``) options.

    The ``tag`` option is accepted but not rendered (it needs Go templates over the container).
    """
    extra: dict[str, str] = {}
    for key in filter(None, config.get("labels", "").split(",")):
        if key in labels:
            extra[key] = labels[key]
    if pattern := config.get("labels-regex"):
        extra.update({k: v for k, v in labels.items() if re.search(pattern, k)})
    env_map = dict(e.split("=", 1) for e in env if "=" in e)
    for key in filter(None, config.get("env", "").split(",")):
        if key in env_map:
            extra[key] = env_map[key]
    if pattern := config.get("env-regex"):
        extra.update({k: v for k, v in env_map.items() if re.search(pattern, k)})
    return extra


def ensure_readable(log_type: str) -> None:
    """``docker logs`` on a driver that keeps nothing (501, dockerd's ErrReadLogsNotSupported)."""
    if (log_type or DEFAULT_LOG_DRIVER) == "none":
        raise errdefs.NotImplemented_("configured logging driver does not support reading")


def validate_log_options(*, stdout: bool, stderr: bool) -> None:
    """The router-level check of ``/containers/{id}/logs`` (before the container is looked up)."""
    if not (stdout or stderr):
        raise errdefs.InvalidParameter("Bad parameters: you must choose at least one stream")


def parse_timestamp(value: str) -> int:
    """Docker's ``seconds[.fraction]`` (timetypes.ParseTimestamps) → nanoseconds since the epoch.

    dockerd returns the strconv error unwrapped, which the API turns into a 500: errdefs.Internal.
    """
    secs, dot, frac = value.partition(".")
    try:
        seconds = _go_int(secs, "strconv.ParseInt")
        if not dot:
            return seconds * 1_000_000_000
        nanos = _go_int(frac, "strconv.ParseInt")
    except ValueError as exc:
        raise errdefs.Internal(str(exc)) from None
    if len(frac) <= 9:
        nanos *= 10 ** (9 - len(frac))
    else:
        nanos = int(nanos * 10.0 ** (9 - len(frac)))
    return seconds * 1_000_000_000 + nanos


def parse_since(value: str | None) -> int | None:
    return parse_timestamp(value) if value else None


def parse_until(value: str | None) -> int | None:
    # dockerd treats until=0 as "no bound" (the CLI sends it when --until is not given).
    return parse_timestamp(value) if value and value != "0" else None


def parse_tail(value: str | None) -> int | None:
    """Lines from the end: None means all. dockerd maps anything Atoi rejects, and negatives, to all."""
    if value is None or not _GO_INT.fullmatch(value) or not -_INT64 <= int(value) < _INT64:
        return None
    n = int(value)
    return n if n >= 0 else None


def _parse_size(text: str, units: Mapping[str, int]) -> int:
    """go-units ``FromHumanSize`` (decimal) / ``RAMInBytes`` (binary), same regex, same errors."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid size: '{text}'")
    if m.group(1).count(".") > 1:
        raise ValueError(f"strconv.ParseFloat: parsing {quote(m.group(1))}: invalid syntax")
    size = float(m.group(1)) * units.get((m.group(2) or "").lower(), 1)
    return int(size)


def _go_int(text: str, func: str) -> int:
    if not _GO_INT.fullmatch(text):
        raise ValueError(f"{func}: parsing {quote(text)}: invalid syntax")
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"{func}: parsing {quote(text)}: value out of range")
    return value
