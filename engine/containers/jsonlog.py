"""The json-file log line codec: bytes in, dockerd's exact JSON line out, and back.

One entry is ``{"log":…,"stream":…,"attrs":…,"time":…}`` + ``\\n``, written the way moby's
``jsonlog.JSONLogs.MarshalJSONBuf`` writes it (not the way ``encoding/json`` would): ``\\t``
becomes ``\\u0009``, ``<>&`` and U+2028/U+2029 are escaped, and every byte of invalid UTF-8
becomes ``\\ufffd`` (Go's ``utf8.DecodeRune`` rejects one byte at a time, which is exactly what
Python's ``surrogateescape`` handler produces). ``time`` is RFC3339Nano with the fraction's
trailing zeros dropped; ``docker logs -t`` prints the same instant with a fixed 9-digit fraction.
Also here: the gzip header dockerd writes on rotated files (its FEXTRA field carries the
last entry's time, so readers can skip whole files older than ``since``).
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from calendar import timegm
from datetime import UTC, datetime
from typing import BinaryIO, NamedTuple

# Bytes Go's ffjson writer escapes in the ASCII range; a line without any takes a fast path.
_ASCII_SPECIAL = re.compile(rb'[\x00-\x1f"\\<>&]')
_ESCAPES: dict[int, str] = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"})
_ESCAPES.update({0x3C: "\\u003c", 0x3E: "\\u003e", 0x26: "\\u0026", 0x2028: "\\u2028", 0x2029: "\\u2029"})
# surrogateescape maps each undecodable byte 0x80-0xff to U+DC80-U+DCFF; Go writes U+FFFD.
_ESCAPES.update({cp: "\\ufffd" for cp in range(0xDC80, 0xDD00)})

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def escape_json_bytes(data: bytes) -> bytes:
    """The body of a JSON string (no quotes) for ``data``, escaped as dockerd's json-file does."""
    if data.isascii() and _ASCII_SPECIAL.search(data) is None:
        return data
    return data.decode("utf-8", "surrogateescape").translate(_ESCAPES).encode("utf-8")


class TimeFormatter:
    """RFC3339Nano (UTC, trailing zeros trimmed) for nanosecond timestamps, cached per second."""

    __slots__ = ("_last", "_last_ns", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = self._last_ns = -1
        self._prefix = self._last = b""

    def format(self, ts_ns: int) -> bytes:
        if ts_ns != self._last_ns:
            self._last_ns, self._last = ts_ns, self._format(ts_ns)
        return self._last

    def _format(self, ts_ns: int) -> bytes:
        second, frac = divmod(ts_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        if frac == 0:
            return self._prefix + b"Z"
        return self._prefix + b"." + f"{frac:09d}".rstrip("0").encode() + b"Z"


def datetime_to_ns(ts: datetime) -> int:
    """Nanoseconds since the epoch; a naive datetime is taken as UTC (dockerd stamps in UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return timegm(ts.utctimetuple()) * 1_000_000_000 + ts.microsecond * 1000


class LogEntry(NamedTuple):
    """One decoded json-file line; ``time`` is the file's text (parse it only when filtering)."""

    stream: str
    log: bytes
    time: str
    attrs: dict[str, str] | None = None


_DECODER = json.JSONDecoder()


def decode_entry(line: bytes) -> LogEntry | None:
    """Decode one line; None for a line that is not a json-file entry (dockerd skips corrupt data)."""
    try:
        # raw_decode on str is about 3x cheaper than json.loads(bytes), which matters at 100k lines.
        obj = _DECODER.raw_decode(line.decode("utf-8", "surrogateescape"))[0]
    except ValueError:
        return None
    if type(obj) is not dict:
        return None
    text = obj.get("log", "")
    stream = obj.get("stream", "")
    stamp = obj.get("time", "")
    if not isinstance(text, str) or not isinstance(stream, str) or not isinstance(stamp, str):
        return None
    try:
        log = text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate escape (``\\ud800``) decodes to U+FFFD in Go.
        log = _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")
    attrs = obj.get("attrs")
    return LogEntry(stream, log, stamp, attrs if isinstance(attrs, dict) else None)


class TimeParser:
    """RFC3339 text → nanoseconds, caching the last whole-second prefix (lines share it in bursts)."""

    __slots__ = ("_base", "_key")

    def __init__(self) -> None:
        self._key = ""
        self._base = 0

    def parse(self, text: str) -> int | None:
        # Fast path for what the writer produces: UTC, "Z", 0-9 fraction digits.
        key, rest = text[:19], text[19:]
        if key == self._key and rest[-1:] == "Z":
            frac = rest[1:-1] if rest[0] == "." else rest[:-1]
            if not frac:
                return self._base
            if frac.isascii() and frac.isdigit():
                return self._base + int(frac[:9].ljust(9, "0"))
        m = _TIME.fullmatch(text)
        if m is None:
            return None
        try:
            tz = "+00:00" if m.group(3) == "Z" else m.group(3)
            base = timegm(datetime.fromisoformat(m.group(1) + tz).utctimetuple()) * 1_000_000_000
        except ValueError:
            return None
        if m.group(3) == "Z":
            self._key, self._base = m.group(1), base
        frac = (m.group(2) or "")[:9]
        return base + (int(frac.ljust(9, "0")) if frac else 0)


def fixed_nano(text: str) -> str:
    """Go's RFC3339NanoFixed rendering of a file timestamp (``docker logs -t`` prefix)."""
    if text[19:20] == "." and text[-1:] == "Z":
        return text[:20] + text[20:-1][:9].ljust(9, "0") + "Z"
    m = _TIME.fullmatch(text)
    if m is None:
        return text
    return f"{m.group(1)}.{(m.group(2) or '')[:9].ljust(9, '0')}{m.group(3)}"


# gzip with dockerd's header: FEXTRA carries {"lastTime": …}, mtime 0, OS "unknown" (Go's defaults).
_GZIP_FEXTRA = 0x04


def gzip_with_extra(src: BinaryIO, dst: BinaryIO, extra: bytes, chunk: int = 1 << 20) -> None:
    dst.write(struct.pack("<BBBBIBBH", 0x1F, 0x8B, 8, _GZIP_FEXTRA, 0, 0, 0xFF, len(extra)) + extra)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    crc = size = 0
    while block := src.read(chunk):
        crc = zlib.crc32(block, crc)
        size += len(block)
        dst.write(comp.compress(block))
    dst.write(comp.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF))


def gzip_extra(head: bytes) -> bytes | None:
    """The FEXTRA field of a gzip member whose first bytes are ``head``, if present."""
    if len(head) < 12 or head[:2] != b"\x1f\x8b" or not head[3] & _GZIP_FEXTRA:
        return None
    (xlen,) = struct.unpack_from("<H", head, 10)
    return head[12 : 12 + xlen] if len(head) >= 12 + xlen else None
