"""``--change`` instructions for ``docker import`` (and ``docker commit``): Dockerfile lines applied to a
container config, as dockerd's ``dockerfile.BuildFromConfig`` does.

Allowed: CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR;
anything else is ``<cmd> is not a valid change command``. CMD/ENTRYPOINT/VOLUME take the JSON (exec)
form or the shell form; HEALTHCHECK takes ``NONE`` or ``[--interval=…] [--timeout=…]
[--start-period=…] [--start-interval=…] [--retries=N] CMD …``; ENV/LABEL take ``k=v`` pairs (quotes
and backslashes as in a Dockerfile) or the legacy ``KEY value`` form; ``$VAR``/``${VAR}`` expand from
the environment built so far. ENTRYPOINT resets a CMD that did not come from the same set of changes.
"""

from __future__ import annotations

import json
import posixpath
import re
import signal as _signal
from collections.abc import Iterable
from typing import Any

from engine import errdefs

VALID_COMMANDS = ("cmd", "entrypoint", "env", "expose", "healthcheck", "label", "onbuild", "stopsignal",
                  "user", "volume", "workdir")  # fmt: skip
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?$", re.IGNORECASE)
_DURATION_PART_RE = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
                      "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_HEALTHCHECK_DURATIONS = (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                          ("start-interval", "StartInterval"))  # fmt: skip


def _lines(changes: Iterable[str]) -> list[str]:
    """Join continuation lines, drop blanks and comments."""
    out: list[str] = []
    pending = ""
    for raw in "\n".join(changes).split("\n"):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        out.append((pending + line).strip())
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def _words(text: str, env: dict[str, str]) -> list[str]:
    """Dockerfile word splitting: whitespace separates, quotes group, backslash escapes, $VAR expands."""
    words: list[str] = []
    cur: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t":
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise errdefs.InvalidParameter(
                    "unexpected end of statement while looking for matching single-quote"
                )
            cur.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
                    cur.append(text[i + 1])
                    i += 2
                elif text[i] == "$":
                    value, i = _expand_at(text, i, env)
                    cur.append(value)
                else:
                    cur.append(text[i])
                    i += 1
            if i >= len(text):
                raise errdefs.InvalidParameter(
                    "unexpected end of statement while looking for matching double-quote"
                )
            i += 1
        elif c == "$":
            value, i = _expand_at(text, i, env)
            cur.append(value)
        else:
            cur.append(c)
            i += 1
    if in_word:
        words.append("".join(cur))
    return words


def _expand_at(text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    m = _VAR_RE.match(text, i)
    if m is None:
        return "$", i + 1
    return env.get(m.group(1) or m.group(2), ""), m.end()


def _env_map(config: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def _json_args(rest: str) -> list[str] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _pairs(cmd: str, rest: str, env: dict[str, str]) -> list[tuple[str, str]]:
    words = _words(rest, env)
    if not words:
        raise errdefs.InvalidParameter(f"{cmd.upper()} requires at least one argument")
    if "=" not in words[0]:
        # Legacy form: the first word is the key, the rest of the line the value.
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise errdefs.InvalidParameter(f"{cmd.upper()} must have two arguments")
        return [(key, " ".join(_words(value.strip(), env)))]
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise errdefs.InvalidParameter(
                f'Syntax error - can\'t find = in "{word}". Must be of the form: name=value'
            )
        if not key:
            raise errdefs.InvalidParameter(f"{cmd.upper()} names can not be blank")
        out.append((key, value))
    return out


def _command(config: dict[str, Any], rest: str) -> list[str]:
    args = _json_args(rest)
    if args is not None:
        return args
    shell = config.get("Shell") or ["/bin/sh", "-c"]
    return [*shell, rest]


def _signal_ok(value: str) -> bool:
    name = value.upper()
    if name.isdigit():
        return 0 < int(name) < 65
    if not name.startswith("SIG"):
        name = "SIG" + name
    return name in _signal.Signals.__members__ or re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name) is not None


def go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (``1m30s``, ``1.5h``, ``250ms``), with its error texts."""
    invalid = errdefs.InvalidParameter(f"time: invalid duration {json.dumps(text)}")
    rest = text
    sign = -1 if rest.startswith("-") else 1
    rest = rest[1:] if rest[:1] in "+-" else rest
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        m = _DURATION_PART_RE.match(rest)
        assert m is not None  # every group may be empty
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise invalid
        if not unit:
            raise errdefs.InvalidParameter(f"time: missing unit in duration {json.dumps(text)}")
        if unit not in _DURATION_UNITS_NS:
            raise errdefs.InvalidParameter(
                f"time: unknown unit {json.dumps(unit)} in duration {json.dumps(text)}"
            )
        scale = _DURATION_UNITS_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        rest = rest[m.end() :]
    return sign * total


def _healthcheck(config: dict[str, Any], rest: str) -> None:
    """HEALTHCHECK as buildkit's parseHealthcheck reads it; flags are ``--name=value`` words first."""
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        rest = rest.strip()
        name, eq, value = word[2:].partition("=")
        if name not in ("interval", "timeout", "start-period", "start-interval", "retries"):
            raise errdefs.InvalidParameter(f"unknown flag: {name}")
        if not eq:
            raise errdefs.InvalidParameter(f"missing a value on flag: {name}")
        flags[name] = value
    if not rest:
        raise errdefs.InvalidParameter("HEALTHCHECK requires at least one argument")
    head, _, args = rest.partition(" ")
    kind, args = head.upper(), args.strip()
    if kind == "NONE":
        if args:
            raise errdefs.InvalidParameter("HEALTHCHECK NONE takes no arguments")
        config["Healthcheck"] = {"Test": ["NONE"]}
        return
    if kind != "CMD":
        raise errdefs.InvalidParameter(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    exec_form = _json_args(args)
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", args] if args else []
    if len(test) < 2:
        raise errdefs.InvalidParameter("Missing command after HEALTHCHECK CMD")
    health: dict[str, Any] = {"Test": test}
    for flag, field in _HEALTHCHECK_DURATIONS:
        ns = go_duration(flags[flag]) if flags.get(flag) else 0
        if 0 < ns < 1_000_000:
            raise errdefs.InvalidParameter(f'Interval "{flag}" cannot be less than 1ms')
        if ns:
            health[field] = ns
    if flags.get("retries"):
        raw = flags["retries"]
        if not re.fullmatch(r"[+-]?\d+", raw) or not -(2**31) <= int(raw) < 2**31:
            reason = "invalid syntax" if not re.fullmatch(r"[+-]?\d+", raw) else "value out of range"
            raise errdefs.InvalidParameter(f'strconv.ParseInt: parsing "{raw}": {reason}')
        if int(raw) < 0:
            raise errdefs.InvalidParameter(f"--retries cannot be negative ({int(raw)})")
        if int(raw):
            health["Retries"] = int(raw)
    config["Healthcheck"] = health


def apply_changes(config: dict[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """Apply Dockerfile ``changes`` to a container config dict (``Env``, ``Cmd``, … keys); returns it."""
    cmd_set = False
    for line in _lines(changes):
        head, _, rest = line.partition(" ")
        cmd = head.lower()
        rest = rest.strip()
        if cmd not in VALID_COMMANDS:
            raise errdefs.InvalidParameter(f"{cmd} is not a valid change command")
        env = _env_map(config)
        if cmd == "env":
            for key, value in _pairs(cmd, rest, env):
                items = [e for e in config.get("Env") or [] if str(e).partition("=")[0] != key]
                config["Env"] = [*items, f"{key}={value}"]
        elif cmd == "label":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs(cmd, rest, env))
            config["Labels"] = labels
        elif cmd == "cmd":
            config["Cmd"] = _command(config, rest)
            cmd_set = True
        elif cmd == "entrypoint":
            config["Entrypoint"] = _command(config, rest) if rest else None
            if not cmd_set:
                config["Cmd"] = None
        elif cmd == "expose":
            ports = dict(config.get("ExposedPorts") or {})
            for word in _words(rest, env):
                m = _PORT_RE.match(word)
                if m is None:
                    raise errdefs.InvalidParameter(f"invalid containerPort: {word.split('/')[0]}")
                lo = int(m.group(1))
                hi = int(m.group(2) or lo)
                proto = (m.group(3) or "tcp").lower()
                for port in range(lo, hi + 1):
                    ports[f"{port}/{proto}"] = {}
            config["ExposedPorts"] = ports
        elif cmd == "user":
            config["User"] = " ".join(_words(rest, env))
        elif cmd == "workdir":
            target = " ".join(_words(rest, env))
            if not posixpath.isabs(target):
                target = posixpath.join("/", str(config.get("WorkingDir") or ""), target)
            config["WorkingDir"] = posixpath.normpath(target)
        elif cmd == "volume":
            paths = _json_args(rest)
            if paths is None:
                paths = _words(rest, env)
            volumes = dict(config.get("Volumes") or {})
            for path in paths:
                if not path.strip():
                    raise errdefs.InvalidParameter("VOLUME specified can not be an empty string")
                volumes[path] = {}
            config["Volumes"] = volumes
        elif cmd == "healthcheck":
            _healthcheck(config, rest)
        elif cmd == "stopsignal":
            sig = " ".join(_words(rest, env))
            if not _signal_ok(sig):
                raise errdefs.InvalidParameter(f"Invalid signal: {sig}")
            config["StopSignal"] = sig
        else:  # onbuild
            trigger = rest.partition(" ")[0].upper()
            if trigger == "ONBUILD":
                raise errdefs.InvalidParameter("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger in ("FROM", "MAINTAINER"):
                raise errdefs.InvalidParameter(f"{trigger} isn't allowed as an ONBUILD trigger")
            # dockerd keeps the trigger exactly as written (``run echo hi`` stays lower-case).
            config["OnBuild"] = [*(config.get("OnBuild") or []), rest]
    return config
