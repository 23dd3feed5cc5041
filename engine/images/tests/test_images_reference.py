"""Docker reference parsing, normalisation, familiar names and Go's path.Match."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import errdefs
from engine.images.reference import (
    Reference,
    familiar_match,
    parse_any_reference,
    parse_normalized_named,
    path_match,
    repo_tag_reference,
)

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "full", "familiar"),
    [
        ("busybox", "docker.io/library/busybox", "busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox", "busybox"),
        ("docker.io/busybox", "docker.io/library/busybox", "busybox"),
        ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x"),
        ("user/app", "docker.io/user/app", "user/app"),
        ("docker.io/library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("localhost/a", "localhost/a", "localhost/a"),
        ("localhost:5000/a/b:tag", "localhost:5000/a/b:tag", "localhost:5000/a/b:tag"),
        ("example.com/a", "example.com/a", "example.com/a"),
        ("[::1]:5000/a:b", "[::1]:5000/a:b", "[::1]:5000/a:b"),
        ("Foo/bar", "Foo/bar", "Foo/bar"),  # an upper-case first element is a domain
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}", f"busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}", f"busybox:1@{DIGEST}"),
        ("a__b.c-d---e", "docker.io/library/a__b.c-d---e", "a__b.c-d---e"),
    ],
)
def test_normalisation(text: str, full: str, familiar: str) -> None:
    ref = parse_normalized_named(text)
    assert str(ref) == full
    assert ref.familiar() == familiar


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
        ("a/B:x", "invalid reference format: repository name (a/B) must be lowercase"),
        ("localhost:5000/Foo", "invalid reference format: repository name (Foo) must be lowercase"),
        ("x@sha256:abc", "invalid reference format"),
        (":foo", "invalid reference format"),
        ("a:b:c", "invalid reference format"),
        ("busybox:", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("-a", "invalid reference format"),
        ("x@md5:" + "0" * 34, "unsupported digest algorithm"),
        ("x@sha256:" + "0" * 32, "invalid checksum digest length"),
        ("a" * 64, f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings"),
        ("a/" + "b" * 256, "repository name must not be more than 255 characters"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as err:
        parse_normalized_named(text)
    assert err.value.message == message


def test_parse_any_reference() -> None:
    assert parse_any_reference("f" * 64) == "sha256:" + "f" * 64
    assert parse_any_reference(DIGEST) == DIGEST
    short = parse_any_reference("sha256:abc")  # a name "sha256" with tag "abc", as in Go
    assert isinstance(short, Reference)
    assert (short.familiar_name, short.tag) == ("sha256", "abc")
    named = parse_any_reference("abc")
    assert isinstance(named, Reference)
    assert named.with_default_tag().familiar() == "abc:latest"


def test_repo_tag_reference() -> None:
    assert repo_tag_reference("", "x") is None
    ref = repo_tag_reference("busybox", "")
    assert ref is not None and ref.familiar() == "busybox:latest"
    ref = repo_tag_reference("busybox:1", "2")
    assert ref is not None and ref.familiar() == "busybox:2"
    with pytest.raises(errdefs.InvalidParameter, match=r"^invalid tag format$"):
        repo_tag_reference("ok", "b@d")
    with pytest.raises(errdefs.InvalidParameter, match=r"^cannot import digest reference$"):
        repo_tag_reference(f"busybox@{DIGEST}", "")


@pytest.mark.parametrize(
    ("pattern", "name", "matched"),
    [
        ("busy*", "busybox", True),
        ("*", "a/b", False),
        ("*/*", "a/b", True),
        ("a/*", "a/b", True),
        ("b?sybox", "busybox", True),
        ("[a-c]usybox", "busybox", True),
        ("[^a-c]usybox", "busybox", False),
        ("busybox", "busybox:latest", False),
        ("busybox:*", "busybox:latest", True),
        ("\\*", "*", True),
        ("*x", "abx", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False),
        ("", "", True),
    ],
)
def test_path_match(pattern: str, name: str, matched: bool) -> None:
    assert path_match(pattern, name) is matched


@pytest.mark.parametrize("pattern", ["[", "[a-", "a\\", "[]", "x[b-]"])
def test_path_match_bad_pattern(pattern: str) -> None:
    with pytest.raises(errdefs.Internal, match=r"^syntax error in pattern$"):
        path_match(pattern, "abc")


def test_familiar_match_falls_back_to_name() -> None:
    ref = parse_normalized_named("localhost:5000/app:1")
    assert familiar_match("localhost:5000/app", ref)
    assert familiar_match("localhost:5000/*:1", ref)
    assert not familiar_match("app", ref)


_component = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
_tag = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=20).filter(
    lambda t: t[0] not in ".-"
)


@given(
    domain=st.sampled_from(["", "localhost/", "localhost:5000/", "example.com/", "reg.io:443/"]),
    parts=st.lists(_component, min_size=1, max_size=3),
    tag=st.none() | _tag,
)
def test_round_trip(domain: str, parts: list[str], tag: str | None) -> None:
    text = domain + "/".join(parts) + (f":{tag}" if tag else "")
    ref = parse_normalized_named(text)
    assert ref.tag == tag
    # The familiar form parses back to the same reference, and the full form is stable.
    assert parse_normalized_named(ref.familiar()) == ref
    assert parse_normalized_named(str(ref)) == ref
    assert str(ref.with_default_tag()).endswith(f":{tag or 'latest'}")


@given(st.text(max_size=30))
def test_never_crashes(text: str) -> None:
    try:
        ref = parse_any_reference(text)
    except errdefs.InvalidParameter:
        return
    assert isinstance(ref, str | Reference)


@given(
    st.text(string.ascii_lowercase + "*?/", max_size=12), st.text(string.ascii_lowercase + "/", max_size=12)
)
def test_star_never_crosses_slash(pattern: str, name: str) -> None:
    if path_match(pattern, name):
        assert pattern.count("/") == name.count("/")
