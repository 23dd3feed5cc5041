"""API versioning and the headers every response carries (dockerd's version middleware).

Every route is served both unversioned and as ``/v{X.Y}/...``. ``VersionMiddleware`` strips the
prefix before routing, refuses versions outside 1.24..1.50 with dockerd's texts, records the
requested version in the scope (unversioned = 1.50) for ``api_version(request)``, adds
``Api-Version``/``Server``/``Ostype``/``Docker-Experimental`` to every response and writes one
access-log line per request.

It is pure ASGI on purpose: Starlette's BaseHTTPMiddleware logs "No response returned" after
every hijacked attach/exec session (docs/hijack.md pitfall 12). A hijacked request never starts
an ASGI response, so it is not logged here; ``api/hijack.py`` logs it.

Per-version request/response shims belong in this module; the engine never sees versions.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.headers import API_VERSION, SERVER_HEADERS

log = logging.getLogger("skiff.api")

MIN_API_VERSION = "1.24"
DEFAULT_API_VERSION = API_VERSION
SCOPE_KEY = "skiff.api_version"

# gorilla/mux pattern of dockerd's router: "/v{version:[0-9.]+}" in front of every route.
_VERSIONED_PATH = re.compile(r"^/v([0-9.]+)(/.*)$")
_TEXT_PLAIN = "text/plain; charset=utf-8"
_FIRST_VERSION_WITH_JSON_ERRORS = "1.23"


def compare_versions(a: str, b: str) -> int:
    """Go's versions.compare: dotted numbers, missing or non-numeric parts count as 0."""

    def parts(v: str) -> list[int]:
        return [int(p) if p.isdigit() else 0 for p in v.split(".")]

    pa, pb = parts(a), parts(b)
    for i in range(max(len(pa), len(pb))):
        x = pa[i] if i < len(pa) else 0
        y = pb[i] if i < len(pb) else 0
        if x != y:
            return 1 if x > y else -1
    return 0


def version_tuple(version: str) -> tuple[int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")]
    parts += [0, 0]
    return parts[0], parts[1]


def api_version(request: HTTPConnection) -> tuple[int, int]:
    """The API version the client asked for, e.g. (1, 41); (1, 50) when unversioned."""
    return version_tuple(api_version_string(request.scope))


def api_version_string(scope: Scope) -> str:
    return str(scope.get(SCOPE_KEY, DEFAULT_API_VERSION))


def version_error(version: str) -> str | None:
    if compare_versions(version, MIN_API_VERSION) < 0:
        return (
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if compare_versions(version, DEFAULT_API_VERSION) > 0:
        return f"client version {version} is too new. Maximum supported API version is {DEFAULT_API_VERSION}"
    return None


_SERVER_HEADERS = tuple((name.encode(), value.encode()) for name, value in SERVER_HEADERS)
_SERVER_HEADER_NAMES = frozenset(name.lower() for name, _ in _SERVER_HEADERS)


def _with_server_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = list(headers)
    # Routes rarely set one of these themselves; only then does the per-name check matter.
    if any(name.lower() in _SERVER_HEADER_NAMES for name, _ in headers):
        present = {name.lower() for name, _ in headers}
        out += [(name, value) for name, value in _SERVER_HEADERS if name.lower() not in present]
    else:
        out += _SERVER_HEADERS
    return out


class VersionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.monotonic()
        method, original_path = scope["method"], scope["path"]
        status: int | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": _with_server_headers(message.get("headers", ()))}
            await send(message)

        try:
            version = DEFAULT_API_VERSION
            scope = {**scope, SCOPE_KEY: version}
            match = _VERSIONED_PATH.match(original_path) if original_path.startswith("/v") else None
            if match:
                version, rest = match.group(1), match.group(2)
                scope[SCOPE_KEY] = version
                scope["path"] = rest
                raw_path = scope.get("raw_path")
                if isinstance(raw_path, bytes):
                    # The prefix is ASCII, so it is the same length in the raw path.
                    scope["raw_path"] = raw_path[len(original_path) - len(rest) :]
            problem = version_error(version) if match else None
            if problem is not None:
                await self._refuse(version, problem, scope, receive, send_with_headers)
            elif method == "OPTIONS":
                # dockerd answers CORS preflights on every path (with CORS headers if configured).
                headers = [(b"content-length", b"0")]
                await send_with_headers({"type": "http.response.start", "status": 200, "headers": headers})
                await send_with_headers({"type": "http.response.body", "body": b""})
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            # No response start means the connection was hijacked (logged there) or abandoned.
            if status is not None:
                elapsed_ms = (time.monotonic() - started_at) * 1000
                log.info("%s %s %d %.0fms", method, original_path, status, elapsed_ms)

    @staticmethod
    async def _refuse(version: str, message: str, scope: Scope, receive: Receive, send: Send) -> None:
        if compare_versions(version, _FIRST_VERSION_WITH_JSON_ERRORS) > 0:
            await error_response(400, message)(scope, receive, send)
            return
        # Clients this old predate JSON errors: dockerd answers like Go's http.Error.
        body = (message + "\n").encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", _TEXT_PLAIN.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
