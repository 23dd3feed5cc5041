"""``/_ping``: its headers, and a fast path that answers it on the connection itself.

Clients ping before nearly every command (the docker CLI before each one, compose and docker-py on
connect), so the ping's latency is every command's floor. Through uvicorn's h11 parser, a task per
request and the ASGI middleware stack it costs more than a millisecond; ``PingFastPathProtocol``
answers a plain ``GET``/``HEAD /_ping`` straight from ``data_received`` with the very bytes the
ASGI route (``api/routers/system.py``) produces, and writes the same access-log line as
``api/versions.py``. ``api/tests/test_ping.py`` compares both paths byte for byte.

Only a request that is unambiguous takes the fast path: one complete HTTP/1.1 request in one read,
on an idle keep-alive connection, with exactly one Host header, no body, no Upgrade/Expect and no
``Connection`` other than keep-alive, and a target that is ``/_ping`` or ``/v{1.24..1.50}/_ping``
without a query. Anything else (a version out of range, pipelining, a malformed header, a split
read) goes through h11 and the app unchanged, which gives the exact same answers, errors included.

Besides what ``api/hijack.py`` lists, this relies on these uvicorn/h11 internals (uvicorn is
pinned; the test asserts they exist): ``server_state.default_headers`` (the Date header uvicorn
refreshes every second), ``H11Protocol.on_response_complete()`` (counts the request and re-arms
the keep-alive timer), ``H11Protocol.flow.write_paused`` and ``h11.Connection.our_state`` /
``their_state``.
"""

from __future__ import annotations

import logging
import re
import time

import h11

from api.headers import API_VERSION, SERVER_HEADERS
from api.hijack import DockerH11Protocol

log = logging.getLogger("skiff.api")

TEXT_PLAIN = "text/plain; charset=utf-8"
PING_HEADERS: dict[str, str] = {
    "Builder-Version": "1",  # classic builder only; "2" would promise BuildKit
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}
MIN_MINOR, MAX_MINOR = 24, int(API_VERSION.split(".")[1])
PING_TARGETS: frozenset[bytes] = frozenset(
    [b"/_ping", *(f"/v1.{minor}/_ping".encode() for minor in range(MIN_MINOR, MAX_MINOR + 1))]
)

# A subset of what h11 accepts (RFC 9110 token names, visible-ASCII values): what does not match
# is left to h11, which then accepts or refuses it as it always does.
_HEADER_LINE = re.compile(
    rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?[ \t]*"
)
_DISQUALIFYING = frozenset([b"content-length", b"transfer-encoding", b"upgrade", b"expect"])


def _head(content_length: int) -> bytes:
    """Everything after uvicorn's default headers, as Starlette + VersionMiddleware + h11 write it."""
    # Starlette lower-cases the route's headers and appends content-length and content-type;
    # VersionMiddleware appends the server headers as spelled in api/headers.py.
    lines = [f"{name.lower()}: {value}" for name, value in PING_HEADERS.items()]
    lines += [f"content-length: {content_length}", f"content-type: {TEXT_PLAIN}"]
    lines += [f"{name}: {value}" for name, value in SERVER_HEADERS]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
_GET_TAIL = _head(2) + b"OK"
_HEAD_TAIL = _head(0)  # the HEAD route answers an empty body, so its own length is 0


def parse_ping(data: bytes) -> tuple[str, str] | None:
    """(method, target) if ``data`` is exactly one plain ping request the fast path may answer."""
    if not data.endswith(b"\r\n\r\n"):
        return None
    first = data.find(b"\r\n")
    method, _, rest = data[:first].partition(b" ")
    if method != b"GET" and method != b"HEAD":
        return None
    target, _, version = rest.partition(b" ")
    if version != b"HTTP/1.1" or target not in PING_TARGETS:
        return None
    hosts = 0
    block = data[first + 2 : -4]
    for line in block.split(b"\r\n") if block else ():
        if _HEADER_LINE.fullmatch(line) is None:
            return None
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name in _DISQUALIFYING or (name == b"connection" and value.strip().lower() != b"keep-alive"):
            return None
    if hosts != 1:
        return None  # h11 refuses a request without (or with several) Host headers
    return method.decode(), target.decode()


class PingFastPathProtocol(DockerH11Protocol):
    """``DockerH11Protocol`` that answers plain pings without h11, a task or the ASGI app."""

    def data_received(self, data: bytes) -> None:
        if not self._answer_ping(data):
            super().data_received(data)

    def _answer_ping(self, data: bytes) -> bool:
        conn = self.conn
        if (
            conn.our_state is not h11.IDLE
            or conn.their_state is not h11.IDLE
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.transport.is_closing()
            or self.flow.write_paused  # a client that does not read: h11's path waits for it
            or conn.trailing_data[0]
        ):
            return False
        request = parse_ping(data)
        if request is None:
            return False
        started = time.monotonic()
        method, target = request
        self._unset_keepalive_if_required()
        head = b"".join(b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers)
        self.transport.write(_STATUS_LINE + head + (_GET_TAIL if method == "GET" else _HEAD_TAIL))
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s %d %.0fms", method, target, 200, (time.monotonic() - started) * 1000)
        self.on_response_complete()
        return True
