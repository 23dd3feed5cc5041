"""Go-compatible time handling for images: RFC 3339 with nanoseconds, and filter timestamps.

Image configs carry ``created`` as RFC 3339 with up to nine fractional digits; dockerd parses it
into a ``time.Time`` (nanosecond precision, the zone offset kept) and prints it back with
``RFC3339Nano`` (trailing zeros trimmed, ``Z`` for UTC). Python's datetime stops at microseconds,
so times are kept as (unix seconds, nanoseconds, offset seconds).

``get_timestamp`` follows docker's ``api/types/time.GetTimestamp`` used by the ``until``,
``before``-like filters: a Go duration (relative to now), a date/time in several layouts
(local time when it has no zone), or a unix timestamp ``seconds[.nanoseconds]``.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from engine import errdefs

_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_DURATION_PART_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
             "h": 3600 * 10**9}  # fmt: skip
_UNIX_RE = re.compile(r"^(-?\d+)(?:\.(\d{1,9}))?$")


@dataclass(frozen=True)
class Time:
    """An instant; compare with ``total_ns()`` (``offset`` only affects printing)."""

    seconds: int
    nanos: int = 0
    offset: int = 0  # seconds east of UTC, only for printing

    @property
    def unix(self) -> int:
        return self.seconds

    def total_ns(self) -> int:
        return self.seconds * 10**9 + self.nanos

    def rfc3339nano(self) -> str:
        """Go's ``t.Format(time.RFC3339Nano)`` in the time's own zone."""
        local = time.gmtime(self.seconds + self.offset)
        out = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        if local.tm_year < 1000:
            out = f"{local.tm_year:04d}" + out[out.index("-") :]
        if self.nanos:
            out += "." + f"{self.nanos:09d}".rstrip("0")
        if self.offset == 0:
            return out + "Z"
        sign = "+" if self.offset > 0 else "-"
        minutes = abs(self.offset) // 60
        return out + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_rfc3339(value: str) -> Time:
    m = _RFC3339_RE.match(value)
    if m is None:
        raise errdefs.InvalidParameter(f'parsing time "{value}": not RFC 3339')
    year, month, day, hour, minute, sec = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and sec < 60):
        raise errdefs.InvalidParameter(f'parsing time "{value}": out of range')
    frac = m.group(7) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    offset = 0
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        if m.group(9) == "-":
            offset = -offset
    seconds = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0)) - offset
    return Time(seconds, nanos, offset)


def try_parse_rfc3339(value: object) -> Time | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value)
    except errdefs.InvalidParameter:
        return None


def now() -> Time:
    ns = time.time_ns()
    return Time(ns // 10**9, ns % 10**9, 0)


def parse_go_duration(value: str) -> int | None:
    """time.ParseDuration → nanoseconds, or None if ``value`` is not a Go duration."""
    s = value
    sign = 1
    if s[:1] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        return None
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART_RE.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            return None
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    return sign * int(total)


def _local_offset(at: float) -> int:
    lt = time.localtime(at)
    return lt.tm_gmtoff


def get_timestamp(value: str, reference: Time | None = None) -> Time:
    """api/types/time.GetTimestamp followed by ParseTimestamps: the instant a filter value names."""
    ref = reference or now()
    if value != "0":
        dur = parse_go_duration(value)
        if dur is not None:
            return Time((ref.total_ns() - dur) // 10**9, 0)
    parse_in_location = not (any(c in value for c in "zZ+") or value.count("-") == 3)
    try:
        return _parse_layouts(value, parse_in_location, ref)
    except ValueError:
        if "-" in value:
            raise errdefs.InvalidParameter(f'parsing time "{value}": cannot parse') from None
        m = _UNIX_RE.match(value)
        if m is None:
            raise errdefs.InvalidParameter(f"failed to parse value as time or duration: {value!r}") from None
        frac = m.group(2) or ""
        return Time(int(m.group(1)), int(frac.ljust(9, "0")) if frac else 0)


def _parse_layouts(value: str, in_location: bool, ref: Time) -> Time:
    m = re.match(
        r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
        r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?$",
        value,
    )
    if m is None:
        raise ValueError(value)
    has_zone = m.group(8) is not None or m.group(9) is not None
    if has_zone == in_location:
        raise ValueError(value)
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hour, minute, sec = (int(m.group(i) or 0) for i in (4, 5, 6))
    frac = m.group(7) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    naive = calendar.timegm((year, month, day, hour, minute, sec, 0, 0, 0))
    if has_zone:
        offset = 0
        if m.group(9):
            offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60 * (-1 if m.group(9) == "-" else 1)
    else:
        offset = _local_offset(ref.seconds)
    return Time(naive - offset, nanos, offset)
