"""Docker image references: the distribution/reference grammar, normalisation and familiar names.

``busybox`` is ``docker.io/library/busybox`` (familiar name ``busybox``); ``localhost:5000/a/b:t``
keeps its domain. Errors carry the texts dockerd prints (``invalid reference format``,
``invalid reference format: repository name (library/Busybox) must be lowercase``, go-digest's
``invalid checksum digest length``), because clients show them verbatim.

Python's ``re`` is leftmost-first like Go's RE2 for these patterns, so the captures agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine import errdefs

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")"
_DOMAIN_AND_PORT = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

_REFERENCE_RE = re.compile(r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$", re.ASCII)
_ANCHORED_NAME_RE = re.compile(r"^(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")$", re.ASCII)
_ANCHORED_TAG_RE = re.compile(r"^" + _TAG + r"$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA256_HEX_RE = re.compile(r"^[a-f0-9]{64}$")
_ALGORITHM_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$")

ERR_REFERENCE_INVALID_FORMAT = "invalid reference format"
ERR_TAG_INVALID_FORMAT = "invalid tag format"
ERR_NAME_CONTAINS_UPPERCASE = "repository name must be lowercase"
ERR_NAME_EMPTY = "repository name must have at least one component"
ERR_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"


@dataclass(frozen=True)
class Reference:
    """A named reference; ``tag`` and ``digest`` are optional (both may be set)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return self.name + self._suffix()

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag is not None else ""
        return out + (f"@{self.digest}" if self.digest is not None else "")

    @property
    def familiar_name(self) -> str:
        """``docker.io/library/busybox`` → ``busybox``; ``docker.io/a/b`` → ``a/b``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        rest = self.path.removeprefix(OFFICIAL_REPO_PREFIX)
        if rest != self.path and "/" not in rest:
            return rest
        return self.path

    def familiar(self) -> str:
        """reference.FamiliarString: familiar name plus tag and digest."""
        return self.familiar_name + self._suffix()

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def with_default_tag(self) -> Reference:
        """reference.TagNameOnly: add ``latest`` when neither tag nor digest is given."""
        return Reference(self.domain, self.path, DEFAULT_TAG, None) if self.is_name_only else self

    def with_tag(self, tag: str) -> Reference:
        """reference.WithTag (keeps a digest if there is one)."""
        if not _ANCHORED_TAG_RE.match(tag):
            raise errdefs.InvalidParameter(ERR_TAG_INVALID_FORMAT)
        return Reference(self.domain, self.path, tag, self.digest)

    def trim(self) -> Reference:
        """reference.TrimNamed: the repository alone."""
        return Reference(self.domain, self.path)


def validate_digest(value: str) -> str:
    """go-digest's Parse/Validate for what we support (sha256); returns the digest unchanged."""
    algo, sep, encoded = value.partition(":")
    if not sep or not algo or not encoded:
        raise errdefs.InvalidParameter("invalid checksum digest format")
    if not _ALGORITHM_RE.match(algo):
        raise errdefs.InvalidParameter("invalid checksum digest format")
    if algo != "sha256":
        raise errdefs.InvalidParameter("unsupported digest algorithm")
    if len(encoded) != 64:
        raise errdefs.InvalidParameter("invalid checksum digest length")
    if not _SHA256_HEX_RE.match(encoded):
        raise errdefs.InvalidParameter("invalid checksum digest format")
    return value


def is_full_id(value: str) -> bool:
    """A bare 64-hex identifier (``anchoredIdentifierRegexp``)."""
    return _IDENTIFIER_RE.match(value) is not None


def parse(s: str) -> Reference:
    """reference.Parse: the grammar without normalisation (a name is always present)."""
    if s == "":
        raise errdefs.InvalidParameter(ERR_NAME_EMPTY)
    m = _REFERENCE_RE.match(s)
    if m is None:
        lower = s.lower()
        if lower != s and _REFERENCE_RE.match(lower):
            raise errdefs.InvalidParameter(ERR_NAME_CONTAINS_UPPERCASE)
        raise errdefs.InvalidParameter(ERR_REFERENCE_INVALID_FORMAT)
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    nm = _ANCHORED_NAME_RE.match(name)
    domain, path = (nm.group(1) or "", nm.group(2)) if nm else ("", name)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise errdefs.InvalidParameter(ERR_NAME_TOO_LONG)
    if digest is not None:
        validate_digest(digest)
    return Reference(domain, path, tag, digest)


def _split_docker_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if first == "localhost":
        domain, remote = first, rest
    elif first == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, rest
    elif any(c in first for c in ".:"):
        domain, remote = first, rest
    elif first.lower() != first:
        # Uppercase namespaces are not allowed, so an uppercase first element must be a domain.
        domain, remote = first, rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def parse_normalized_named(s: str) -> Reference:
    """reference.ParseNormalizedNamed: ``busybox`` → ``docker.io/library/busybox`` (no default tag)."""
    if is_full_id(s):
        raise errdefs.InvalidParameter(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(s)
    remote = remainder.split(":", 1)[0] if ":" in remainder else remainder
    if remote.lower() != remote:
        raise errdefs.InvalidParameter(
            f"invalid reference format: repository name ({remote}) must be lowercase"
        )
    return parse(domain + "/" + remainder)


def parse_any_reference(s: str) -> Reference | str:
    """reference.ParseAnyReference: a 64-hex ID or ``sha256:<64 hex>`` → the digest string; else a name."""
    if is_full_id(s):
        return "sha256:" + s
    try:
        return validate_digest(s)
    except errdefs.InvalidParameter:
        pass
    return parse_normalized_named(s)


def parse_tag_reference(s: str) -> Reference:
    """A name that must carry a tag once defaulted (load's RepoTags, tag targets)."""
    return parse_normalized_named(s).with_default_tag()


def repo_tag_reference(repo: str, tag: str) -> Reference | None:
    """httputils.RepoTagReference: ``repo`` plus an optional ``tag`` → a tagged reference (None: no repo)."""
    if repo == "":
        return None
    ref = parse_normalized_named(repo)
    if ref.digest is not None:
        raise errdefs.InvalidParameter("cannot import digest reference")
    if tag != "":
        return ref.with_tag(tag)
    return ref.with_default_tag()


def sort_key(ref: Reference) -> str:
    """Moby lists an image's references sorted by their full string."""
    return str(ref)


# --- Go path.Match, used by the ``reference`` image filter (reference.FamiliarMatch) ---------------


class BadPattern(errdefs.Internal):
    """path.ErrBadPattern; dockerd passes it through untyped, hence a 500."""

    def __init__(self) -> None:
        super().__init__("syntax error in pattern")


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise BadPattern()
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern()
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPattern()
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    """A star-free chunk against the start of ``s``; scans on after a mismatch to catch syntax errors."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = "\0"
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern()
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return ("", False) if failed else (s, True)


def path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: ``*`` and ``?`` never match ``/``; a malformed pattern raises BadPattern."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        rest, ok = _match_chunk(chunk, name)
        if ok and (rest == "" or pattern):
            name = rest
            continue
        matched_after_skip = False
        if star:
            i = 0
            while i < len(name) and name[i] != "/":
                rest, ok = _match_chunk(chunk, name[i + 1 :])
                if ok and not (pattern == "" and rest):
                    name = rest
                    matched_after_skip = True
                    break
                i += 1
        if matched_after_skip:
            continue
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return name == ""


def familiar_match(pattern: str, ref: Reference) -> bool:
    """reference.FamiliarMatch: the pattern against the familiar string, then the familiar name."""
    if path_match(pattern, ref.familiar()):
        return True
    return path_match(pattern, ref.familiar_name)
