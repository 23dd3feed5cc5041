"""Query-parameter parsing with dockerd's rules: booleans, ``filters`` JSON and unix timestamps.

Routers take raw ``str | None`` query values and convert them here, so every endpoint accepts
exactly what dockerd accepts and fails with dockerd's words. ``Filters`` mirrors Go's
``filters.Args`` (a set of values per key): the map form ``{"k":{"v":true}}`` that Go clients
send and the legacy list form ``{"k":["v"]}`` that docker-py sends both parse to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request

from engine import errdefs

_FALSE_WORDS = frozenset({"", "0", "no", "false", "none"})
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1


def docker_bool(value: str | None, default: bool = False) -> bool:
    """httputils.BoolValue: "", 0, no, false, none (any case) are false, anything else true."""
    if value is None:
        return default
    return value.strip().lower() not in _FALSE_WORDS


def _go_slice(values: Iterable[str]) -> str:
    """How Go's %s prints a []string: ``[a b]``."""
    return "[" + " ".join(values) + "]"


class Filters:
    """A ``filters`` query parameter: keys mapped to an ordered set of values."""

    def __init__(self, fields: Mapping[str, Iterable[str]] | None = None) -> None:
        # dict keys as an insertion-ordered set, so error messages are deterministic.
        self._fields: dict[str, dict[str, None]] = {
            key: dict.fromkeys(values) for key, values in (fields or {}).items()
        }

    @classmethod
    def parse(cls, raw: str | None) -> Filters:
        if raw is None or raw == "":
            return cls()
        try:
            decoded = json.loads(raw)
        except ValueError as exc:
            # dockerd relays its JSON decoder's error text (as a 400 since 23.0).
            raise errdefs.InvalidParameter(str(exc)) from None
        if decoded is None:
            return cls()
        if not isinstance(decoded, dict):
            raise errdefs.InvalidParameter("invalid filter")
        fields: dict[str, list[str]] = {}
        for key, values in decoded.items():
            if values is None:
                fields[key] = []
            elif isinstance(values, dict) and all(isinstance(v, bool) for v in values.values()):
                # Go's ExactMatch tests the stored bool, so {"v": false} never matches: drop it.
                fields[key] = [v for v, on in values.items() if on]
            elif isinstance(values, list) and all(isinstance(v, str) for v in values):
                fields[key] = values
            else:
                raise errdefs.InvalidParameter("invalid filter")
        return cls(fields)

    def validate(self, allowed: Iterable[str]) -> None:
        accepted = set(allowed)
        for key in self._fields:
            if key not in accepted:
                raise errdefs.InvalidParameter(f"invalid filter '{key}'")

    def get(self, key: str) -> list[str]:
        return list(self._fields.get(key, ()))

    def has(self, key: str) -> bool:
        return key in self._fields

    def keys(self) -> list[str]:
        return list(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Filters({self.as_dict()!r})"

    def as_dict(self) -> dict[str, list[str]]:
        return {key: list(values) for key, values in self._fields.items()}

    def exact_match(self, key: str, source: str) -> bool:
        """True when ``key`` has no values or ``source`` is one of them."""
        values = self._fields.get(key)
        return not values or source in values

    def fuzzy_match(self, key: str, source: str) -> bool:
        """Like ``exact_match``, but a value may also be a prefix of ``source`` (IDs)."""
        values = self._fields.get(key)
        return not values or source in values or any(source.startswith(v) for v in values)

    def match_labels(self, labels: Mapping[str, str] | None, key: str = "label") -> bool:
        """Every ``key`` value must match: ``k`` needs the label present, ``k=v`` the exact value.

        ``key="label!"`` is the negated filter of the prune endpoints; callers invert the result.
        """
        values = self._fields.get(key)
        if not values:
            return True
        if not labels:
            return False
        for value in values:
            name, has_value, wanted = value.partition("=")
            if name not in labels:
                return False
            if has_value and labels[name] != wanted:
                return False
        return True

    def bool_value(self, key: str) -> bool | None:
        """``dangling=true|false|1|0``; None when absent. Conflicting or other values are a 400."""
        values = self._fields.get(key)
        if values is None:
            return None
        is_false = "0" in values or "false" in values
        is_true = "1" in values or "true" in values
        if is_false == is_true:
            suffix = f"={_go_slice(values)}" if values else ""
            raise errdefs.InvalidParameter(f"invalid filter '{key}{suffix}'")
        return is_true


def parse_timestamp(value: str | None) -> int | None:
    """``since``/``until`` of /events and logs: ``seconds[.fraction]`` → unix nanoseconds.

    The Go client converts durations and RFC 3339 to this form before sending. dockerd parses
    with strconv and relays its error untyped, hence a 500 with Go's text.
    """
    if value is None or value == "":
        return None
    seconds_text, dot, fraction = value.partition(".")
    seconds = _parse_go_int(seconds_text)
    if not dot:
        return seconds * 1_000_000_000
    frac = _parse_go_int(fraction)
    # Go scales the fraction by 10**(9 - digits), so "1.5" is half a second.
    nanos = int(frac * 10 ** (9 - len(fraction))) if len(fraction) <= 9 else frac // 10 ** (len(fraction) - 9)
    return seconds * 1_000_000_000 + nanos


def _parse_go_int(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise errdefs.Internal(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    number = int(text)
    if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise errdefs.Internal(f'strconv.ParseInt: parsing "{text}": value out of range')
    return number


def go_json_kind(value: Any) -> str:
    """The JSON kind Go's encoding/json names in an UnmarshalTypeError."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "object"


async def read_json_object(
    request: Request, go_type: str, *, check_content_type: bool = True
) -> dict[str, Any] | None:
    """A request body as dockerd's handlers decode it into ``go_type``.

    ``None`` for an empty body or JSON null (Go's decoder sees io.EOF or leaves the value
    zero); the caller decides whether that is an error. ``check_content_type`` is
    httputils.CheckForJSON: an absent Content-Type is accepted, another one is refused.
    """
    if check_content_type:
        content_type = request.headers.get("content-type", "")
        if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise errdefs.InvalidParameter(
                f"unsupported Content-Type header ({content_type}): must be 'application/json'"
            )
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errdefs.InvalidParameter(f"invalid JSON: {exc}") from None
    if body is None:
        return None
    if not isinstance(body, dict):
        raise errdefs.InvalidParameter(
            f"invalid JSON: json: cannot unmarshal {go_json_kind(body)} into Go value of type {go_type}"
        )
    return body
