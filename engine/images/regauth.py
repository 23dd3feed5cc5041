"""Registry credentials and the challenge/token side of the distribution auth protocol.

``AuthConfig`` is what clients send (``X-Registry-Auth``: base64url JSON; ``POST /auth``: JSON
body). It never appears in logs or on disk: its ``repr`` hides the secrets and nothing here writes
it anywhere. ``parse_challenges`` reads ``WWW-Authenticate`` (RFC 7235 as distribution's
``challenge`` package does); ``TokenCache`` remembers bearer tokens per realm, service, scope and
credential until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

_AUTH_FIELDS = ("username", "password", "auth", "email", "serveraddress", "identitytoken", "registrytoken")


@dataclass(frozen=True)
class AuthConfig:
    """types.AuthConfig. Empty means anonymous."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    auth: str = field(default="", repr=False)
    email: str = field(default="", repr=False)
    serveraddress: str = ""
    identitytoken: str = field(default="", repr=False)
    registrytoken: str = field(default="", repr=False)

    @staticmethod
    def from_json(obj: Any) -> AuthConfig:
        """Go's json decoding: field names match case-insensitively, unknown keys are ignored."""
        if not isinstance(obj, dict):
            return AuthConfig()
        by_lower = {str(k).lower(): v for k, v in obj.items()}
        values = {name: by_lower.get(name) for name in _AUTH_FIELDS}
        return AuthConfig(**{k: v for k, v in values.items() if isinstance(v, str)})

    @staticmethod
    def from_header(value: str | None) -> AuthConfig:
        """``X-Registry-Auth``; like dockerd, anything undecodable counts as no credentials.

        Clients disagree on the encoding: base64url (the spec), padded or not, and some send the
        standard alphabet; all are accepted.
        """
        if not value:
            return AuthConfig()
        text = value.strip().replace("+", "-").replace("/", "_").rstrip("=")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return AuthConfig.from_json(json.loads(raw))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return AuthConfig()

    def credentials(self) -> tuple[str, str]:
        """Username and password, from the fields or from ``auth`` (base64 of ``user:password``)."""
        if self.username or self.password or not self.auth:
            return self.username, self.password
        try:
            decoded = base64.b64decode(self.auth + "=" * (-len(self.auth) % 4)).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return "", ""
        user, _, password = decoded.partition(":")
        return user, password

    @property
    def has_basic(self) -> bool:
        user, password = self.credentials()
        return bool(user and password)

    def fingerprint(self) -> str:
        """A stable key for caches that must not mix credentials (never the secrets themselves)."""
        user, password = self.credentials()
        material = "\0".join((user, password, self.identitytoken, self.registrytoken))
        return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(r"\s*(" + _TOKEN + r")\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|(" + _TOKEN + r"))\s*,?")
_SCHEME_RE = re.compile(r"\s*(" + _TOKEN + r")(?:\s+|$)")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """``WWW-Authenticate`` header values → challenges (``Bearer realm="…",service="…"``)."""
    out: list[Challenge] = []
    for value in values:
        pos = 0
        while pos < len(value):
            m = _SCHEME_RE.match(value, pos)
            if m is None:
                break
            scheme, pos = m.group(1).lower(), m.end()
            params: dict[str, str] = {}
            while pos < len(value):
                p = _PARAM_RE.match(value, pos)
                if p is None:
                    break
                raw = p.group(2) if p.group(2) is not None else p.group(3)
                params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", raw)
                pos = p.end()
            out.append(Challenge(scheme, params))
            while pos < len(value) and value[pos] in ", ":
                pos += 1
    return out


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scopes, credential fingerprint)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._clock = clock

    def get(self, key: tuple[str, ...]) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires <= self._clock():
            self._tokens.pop(key, None)
            return None
        return token.value

    def put(self, key: tuple[str, ...], value: str, expires_in: float) -> None:
        # distribution's token handler: a short or missing lifetime means 60 s; refresh a little early.
        lifetime = max(float(expires_in or 0), 60.0)
        self._tokens[key] = _Token(value, self._clock() + lifetime - 5)
        if len(self._tokens) > 256:
            now = self._clock()
            for k in [k for k, t in self._tokens.items() if t.expires <= now]:
                del self._tokens[k]

    def drop(self, key: tuple[str, ...]) -> None:
        self._tokens.pop(key, None)


def repository_scope(path: str, actions: tuple[str, ...]) -> str:
    return f"repository:{path}:{','.join(actions)}"
