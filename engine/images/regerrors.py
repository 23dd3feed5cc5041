"""Registry failures with the texts dockerd prints for them.

dockerd's registry client (docker/distribution) turns an error response into ``errcode`` errors
(``denied: requested access to the resource is denied``, ``manifest unknown: manifest unknown``)
and wraps transport failures like Go's ``url.Error`` (``Get "http://…/v2/": dial tcp …: connect:
connection refused``). Clients and scripts match on these strings, so they are reproduced here;
``translate_pull_error`` then decides, as dockerd's ``translatePullError`` does, which of them
are a 404 (``pull access denied …``, ``manifest for … not found``) and which a 500.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import ssl
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus

import httpx

from engine import errdefs
from engine.images.reference import Reference
from engine.images.regauth import Challenge, parse_challenges

# errcode descriptors: code → default message.
DEFAULT_MESSAGES = {
    "UNKNOWN": "unknown error",
    "UNSUPPORTED": "The operation is unsupported.",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNAVAILABLE": "service unavailable",
    "TOOMANYREQUESTS": "too many requests",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "SIZE_INVALID": "provided length did not match content length",
    "NAME_INVALID": "invalid repository name",
    "TAG_INVALID": "manifest tag did not match URI",
    "NAME_UNKNOWN": "repository name not known to registry",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
    "RANGE_INVALID": "invalid content range",
}


class RegistryError(Exception):
    """One errcode.Error: ``<code in words>: <message>``."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code if code in DEFAULT_MESSAGES else "UNKNOWN"
        self.message = message or DEFAULT_MESSAGES[self.code]
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.code.lower().replace('_', ' ')}: {self.message}"


class UnexpectedResponse(Exception):
    """A response the client could not interpret (distribution's UnexpectedHTTP*Error)."""


class TransportError(Exception):
    """Go's ``url.Error``: ``<Method> "<url>": <reason>``."""

    def __init__(self, method: str, url: str, reason: str, *, auth_failure: bool = False) -> None:
        self.reason = reason
        self.auth_failure = auth_failure  # credentials refused or missing: never worth a retry
        # Without a method it is a failure while reading a body (io.Copy's error: no URL).
        super().__init__(f'{method.capitalize()} "{url}": {reason}' if method else reason)


def _challenge_error(challenges: Sequence[Challenge]) -> RegistryError | None:
    for c in challenges:
        if c.scheme != "bearer":
            continue
        code = {"invalid_token": "UNAUTHORIZED", "insufficient_scope": "DENIED"}.get(
            c.params.get("error", "")
        )
        if code is not None:
            return RegistryError(code, c.params.get("error_description", ""))
    return None


def _body_errors(status: int, body: bytes) -> list[RegistryError] | UnexpectedResponse:
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
        parse_error = "invalid character looking for beginning of value"
    else:
        parse_error = "unexpected end of JSON input" if not body else ""
    if isinstance(doc, dict) and isinstance(doc.get("details"), str) and doc["details"]:
        # The token servers' format ({"details": "..."}), which Docker Hub still uses.
        code = {401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}.get(status, "UNKNOWN")
        return [RegistryError(code, doc["details"])]
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors:
        out = []
        for e in errors:
            if isinstance(e, dict):
                out.append(RegistryError(str(e.get("code") or "UNKNOWN"), str(e.get("message") or "")))
        if out:
            return out
    reason = parse_error or "no error details found in HTTP response body"
    text = body.decode(errors="replace")
    return UnexpectedResponse(f"error parsing HTTP {status} response body: {reason}: {json.dumps(text)}")


def from_response(status: int, headers: Mapping[str, str] | httpx.Headers, body: bytes) -> Exception:
    """distribution's HandleErrorResponse: the error an unsuccessful response stands for."""
    if 400 <= status < 500:
        values = headers.get_list("www-authenticate") if isinstance(headers, httpx.Headers) else []
        from_challenge = _challenge_error(parse_challenges(values))
        parsed = _body_errors(status, body)
        if from_challenge is not None:
            return from_challenge  # merged with the body's errors, the challenge's comes first
        if isinstance(parsed, UnexpectedResponse):
            if status == 401:
                return RegistryError("UNAUTHORIZED")
            return parsed
        return parsed[0]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return UnexpectedResponse(f"received unexpected HTTP status: {status} {phrase}".rstrip())


def split_host(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: always reached directly, plain HTTP allowed."""
    host = split_host(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proxy_for(url: httpx.URL) -> str | None:
    if is_loopback(url.host):
        return None
    proxies = urllib.request.getproxies_environment()
    bypass: Callable[[str], bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 - no stub
    if bypass(url.host):
        return None
    return proxies.get(url.scheme)


def _dial_reason(target: str, exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return f"dial tcp {target}: connect: connection refused"
        if isinstance(cause, ssl.SSLError):
            return f"tls: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text:
        return f"dial tcp {target}: connect: connection refused"
    return f"dial tcp {target}: {text}"


def transport_error(method: str, url: httpx.URL, exc: httpx.TransportError) -> TransportError:
    """An httpx failure worded like Go's net/http one."""
    port = url.port or (443 if url.scheme == "https" else 80)
    target = f"{url.host}:{port}"
    proxy = _proxy_for(url) if not isinstance(exc, httpx.ProxyError) else None
    if isinstance(exc, httpx.ProxyError | httpx.ConnectError) and proxy:
        p = httpx.URL(proxy)
        ptarget = f"{p.host}:{p.port or (443 if p.scheme == 'https' else 80)}"
        return TransportError(method, str(url), f"proxyconnect tcp: {_dial_reason(ptarget, exc)}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return TransportError(method, str(url), _dial_reason(target, exc))
    if isinstance(exc, httpx.TimeoutException):
        return TransportError(method, str(url), "net/http: timeout awaiting response headers")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return TransportError(method, str(url), "unexpected EOF")
    return TransportError(method, str(url), str(exc) or type(exc).__name__)


def translate_pull_error(err: BaseException, ref: Reference) -> errdefs.EngineError:
    """dockerd's translatePullError: denied / unknown manifest / unknown repository are 404s."""
    if isinstance(err, errdefs.EngineError):
        return err
    if isinstance(err, RegistryError):
        if err.code == "DENIED":
            return errdefs.NotFound(
                f"pull access denied for {ref.familiar_name}, repository does not exist or may require "
                f"'docker login': {err}"
            )
        if err.code == "MANIFEST_UNKNOWN":
            return errdefs.NotFound(f"manifest for {ref.familiar()} not found: {err}")
        if err.code == "NAME_UNKNOWN":
            return errdefs.NotFound(f"repository {ref.familiar_name} not found: {err}")
    return errdefs.Internal(str(err))
