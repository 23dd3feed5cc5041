"""The registry client's pure parts and auth flows: credentials, challenges, endpoints, manifests,
basic and bearer auth (token endpoint, identity tokens, caching), login and its refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import httpx
import pytest

from engine import errdefs
from engine.images import manifest as mf
from engine.images.endpoints import Endpoint, RegistryOptions, endpoints, is_insecure, registry_host
from engine.images.platform import Platform
from engine.images.regauth import AuthConfig, parse_challenges
from engine.images.regerrors import RegistryError, TransportError, from_response, translate_pull_error
from engine.images.registry import RegistryClient

from .fakeregistry import REALM, FakeRegistry, make_image
from .imagetars import sha

# --- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
        lambda b: base64.b64encode(b).decode(),
    ],
    ids=["url-padded", "url-unpadded", "std-alphabet"],
)
def test_registry_auth_header_encodings(encode: object) -> None:
    # "?>" makes the standard and URL alphabets differ ("+" / "/" vs "-" / "_").
    doc = {"Username": "al?>ce", "password": "p?>ss", "serveraddress": "reg.test", "identitytoken": ""}
    auth = AuthConfig.from_header(encode(json.dumps(doc).encode()))  # type: ignore[operator]
    assert auth.credentials() == ("al?>ce", "p?>ss") and auth.serveraddress == "reg.test"


def test_registry_auth_header_empty_or_garbage_is_anonymous() -> None:
    for value in (None, "", "e30=", "e30", "!!!", base64.b64encode(b"[1,2]").decode()):
        auth = AuthConfig.from_header(value)
        assert auth == AuthConfig() and not auth.has_basic


def test_auth_field_and_secrets_never_in_repr() -> None:
    auth = AuthConfig(auth=base64.b64encode(b"bob:hunter2").decode(), identitytoken="tok-123")
    assert auth.credentials() == ("bob", "hunter2")
    assert "hunter2" not in repr(auth) and "tok-123" not in repr(auth) and "bob" not in repr(auth)
    assert auth.fingerprint() != AuthConfig().fingerprint()


def test_parse_challenges() -> None:
    got = parse_challenges(
        [
            'Bearer realm="https://auth.test/token",service="reg",scope="repository:a/b:pull,push"',
            'Basic realm="x"',
        ]
    )
    assert [c.scheme for c in got] == ["bearer", "basic"]
    assert got[0].params == {
        "realm": "https://auth.test/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    assert (
        parse_challenges(['Bearer realm="r", error="insufficient_scope"'])[0].params["error"]
        == "insufficient_scope"
    )


# --- endpoints ------------------------------------------------------------------------------------


def test_plain_http_only_where_allowed() -> None:
    opts = RegistryOptions(
        insecure_registries=("reg.lan:5000", "10.0.0.0/8"), mirrors=("http://127.0.0.1:5555",)
    )
    assert (
        is_insecure("127.0.0.1:5000", opts)
        and is_insecure("localhost:5000", opts)
        and is_insecure("[::1]:5", opts)
    )
    assert is_insecure("reg.lan:5000", opts) and is_insecure("10.1.2.3:443", opts)
    assert not is_insecure("reg.lan", opts) and not is_insecure("example.com:5000", opts)
    assert endpoints("127.0.0.2:5000", opts, mirrors=True) == [
        Endpoint(("https://127.0.0.2:5000", "http://127.0.0.2:5000"), verify=False)
    ]
    assert endpoints("example.com", opts, mirrors=True) == [Endpoint(("https://example.com",))]
    assert endpoints("docker.io", opts, mirrors=True) == [
        Endpoint(("http://127.0.0.1:5555",), True, True),
        Endpoint(("https://registry-1.docker.io",)),
    ]
    assert endpoints("docker.io", opts, mirrors=False) == [Endpoint(("https://registry-1.docker.io",))]


def test_registry_host_for_login() -> None:
    assert registry_host("") == "docker.io"
    assert registry_host("https://index.docker.io/v1/") == "docker.io"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_host("http://127.0.0.1:5000/") == "127.0.0.1:5000"
    with pytest.raises(errdefs.InvalidParameter, match=r'unsupported URL scheme "ftp"'):
        registry_host("ftp://x")


# --- errors ---------------------------------------------------------------------------------------


def test_error_translation_like_dockerd() -> None:
    from engine.images.reference import parse_normalized_named

    ref = parse_normalized_named("busybox:nope")
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
    err = from_response(404, httpx.Headers(), body)
    assert (
        str(translate_pull_error(err, ref))
        == "manifest for busybox:nope not found: manifest unknown: manifest unknown"
    )
    assert isinstance(translate_pull_error(err, ref), errdefs.NotFound)
    headers = httpx.Headers({"WWW-Authenticate": 'Bearer realm="r",service="s",error="insufficient_scope"'})
    denied = translate_pull_error(from_response(401, headers, b""), ref)
    assert isinstance(denied, errdefs.NotFound) and denied.message == (
        "pull access denied for busybox, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied"
    )
    assert str(from_response(401, httpx.Headers(), b'{"details":"incorrect username or password"}')) == (
        "unauthorized: incorrect username or password"
    )
    assert str(from_response(502, httpx.Headers(), b"")) == "received unexpected HTTP status: 502 Bad Gateway"
    assert isinstance(translate_pull_error(from_response(500, httpx.Headers(), b""), ref), errdefs.Internal)


def test_connection_refused_is_worded_like_go() -> None:
    async def go() -> None:
        client = RegistryClient()
        try:
            with pytest.raises(TransportError) as info:
                await client.ping(Endpoint(("http://127.0.0.1:9",), verify=False))
        finally:
            await client.aclose()
        assert (
            str(info.value)
            == 'Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused'
        )

    asyncio.run(go())


# --- manifests ------------------------------------------------------------------------------------


def _entry(arch: str, variant: str = "", os_: str = "linux") -> mf.Descriptor:
    platform = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
    return mf.Descriptor(mf.MT_OCI_MANIFEST, sha(f"{os_}/{arch}/{variant}".encode()), 1, platform)


def test_platform_selection_from_an_index() -> None:
    entries = [
        _entry("arm", "v6"),
        _entry("arm64", "v8"),
        _entry("amd64"),
        _entry("arm", "v7"),
        _entry("amd64", "", "windows"),
    ]
    pick = lambda p: [d.platform for d in mf.select(entries, p)]  # noqa: E731
    assert pick(Platform("linux", "amd64"))[0] == {"os": "linux", "architecture": "amd64"}
    assert pick(Platform("linux", "arm64", "v8"))[0]["architecture"] == "arm64"
    assert [p["variant"] for p in pick(Platform("linux", "arm", "v7"))] == ["v7", "v6"]
    assert pick(Platform("linux", "s390x")) == []
    assert mf.no_match_error(Platform("linux", "s390x")).message == (
        "no matching manifest for linux/s390x in the manifest list entries"
    )


def test_schema1_and_artifacts_refused() -> None:
    with pytest.raises(errdefs.InvalidParameter, match=r"schema 1 support has been removed.*reg.test/a:1"):
        mf.parse(mf.MT_DOCKER_SCHEMA1_SIGNED, b'{"schemaVersion":1}', "reg.test/a:1")
    with pytest.raises(errdefs.InvalidParameter, match=r"schema 1"):
        mf.parse("application/json", b'{"schemaVersion":1,"fsLayers":[]}', "x")
    with pytest.raises(errdefs.InvalidParameter, match=r'Encountered remote "application/vnd.cncf.helm'):
        mf.check_config_type("application/vnd.cncf.helm.config.v1+json")
    assert mf.parse("", b'{"schemaVersion":2,"manifests":[]}', "x").is_index


def test_push_manifest_bytes_match_distribution() -> None:
    image = make_image([{"a": b"a"}])
    doc = json.loads(image.manifest)
    config = mf.Descriptor.from_json(doc["config"])
    layers = [mf.Descriptor.from_json(x) for x in doc["layers"]]
    assert mf.build_image_manifest(config, layers) == (mf.MT_DOCKER_MANIFEST, image.manifest)


# --- auth flows -----------------------------------------------------------------------------------


def _run(registry: FakeRegistry, coro_fn: object) -> None:
    async def go() -> None:
        client = RegistryClient(transport=registry.transport())
        try:
            await coro_fn(client)  # type: ignore[operator]
        finally:
            await client.aclose()

    asyncio.run(go())


def _endpoint() -> Endpoint:
    return Endpoint(("https://reg.test",))


def test_basic_auth_flow() -> None:
    registry = FakeRegistry(auth="basic")
    image = make_image([{"a": b"a"}])
    registry.put_image("team/app", "v1", image)

    async def go(client: RegistryClient) -> None:
        repo = await client.open(
            _endpoint(), "team/app", AuthConfig(username="alice", password="secret"), ("pull",)
        )
        assert (await repo.manifest("v1", "x")).raw == image.manifest
        anonymous = await client.open(_endpoint(), "team/app", AuthConfig(), ("pull",))
        with pytest.raises(
            TransportError, match=r'^Get "https://reg.test/v2/team/app/manifests/v1": no basic auth'
        ):
            await anonymous.manifest("v1", "x")
        wrong = await client.open(
            _endpoint(), "team/app", AuthConfig(username="alice", password="no"), ("pull",)
        )
        with pytest.raises(RegistryError, match=r"^unauthorized: authentication required$"):
            await wrong.manifest("v1", "x")

    _run(registry, go)


def test_bearer_flow_token_scope_cache_and_identity_token() -> None:
    registry = FakeRegistry(auth="bearer")
    image = make_image([{"a": b"a"}])
    registry.put_image("team/app", "v1", image)
    registry.put_image("public/app", "v1", image)

    async def go(client: RegistryClient) -> None:
        auth = AuthConfig(username="alice", password="secret")
        repo = await client.open(_endpoint(), "team/app", auth, ("pull",))
        await repo.manifest("v1", "x")
        await repo.blob_bytes(image.id, 1 << 20)
        assert len(registry.token_requests) == 1  # cached for the second request
        query = registry.token_requests[0].url.params
        assert query.get_list("scope") == ["repository:team/app:pull"] and query["service"] == "fake.test"
        assert query["account"] == "alice" and "authorization" in registry.token_requests[0].headers

        anonymous = await client.open(_endpoint(), "public/app", AuthConfig(), ("pull",))
        assert (await anonymous.manifest("v1", "x")).raw == image.manifest
        denied = await client.open(_endpoint(), "team/app", AuthConfig(), ("pull",))
        with pytest.raises(RegistryError) as info:
            await denied.manifest("v1", "x")
        assert info.value.code == "DENIED"

        bad = await client.open(
            _endpoint(), "team/app", AuthConfig(username="alice", password="no"), ("pull",)
        )
        with pytest.raises(TransportError) as err:
            await bad.manifest("v1", "x")
        assert str(err.value) == (
            'Get "https://reg.test/v2/team/app/manifests/v1": unauthorized: incorrect username or password'
        )

        token = await client.login(AuthConfig(username="alice", password="secret", serveraddress="reg.test"))
        assert token in registry.refresh_tokens
        login_query = registry.token_requests[-1].url.params
        assert login_query["offline_token"] == "true" and login_query["client_id"] == "docker"
        with_token = await client.open(_endpoint(), "team/app", AuthConfig(identitytoken=token), ("pull",))
        await with_token.manifest("v1", "x")
        post = registry.token_requests[-1]
        form = dict(x.split("=", 1) for x in post.content.decode().split("&"))
        assert (
            post.method == "POST" and form["grant_type"] == "refresh_token" and form["refresh_token"] == token
        )
        assert post.url == REALM

    _run(registry, go)


def test_login_refusals_are_401_with_dockerd_text() -> None:
    async def login(mode: str, password: str) -> str:
        registry = FakeRegistry(auth=mode)
        client = RegistryClient(transport=registry.transport())
        try:
            return await client.login(
                AuthConfig(username="alice", password=password, serveraddress="reg.test")
            )
        finally:
            await client.aclose()

    assert asyncio.run(login("basic", "secret")) == ""
    with pytest.raises(errdefs.Unauthorized) as info:
        asyncio.run(login("basic", "wrong"))
    assert info.value.message == "login attempt to https://reg.test/v2/ failed with status: 401 Unauthorized"
    with pytest.raises(errdefs.Unauthorized) as info:
        asyncio.run(login("bearer", "wrong"))
    assert info.value.message == 'Get "https://reg.test/v2/": unauthorized: incorrect username or password'


def test_proxy_from_environment_only_for_remote_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def go() -> None:
        client = RegistryClient()
        try:
            with pytest.raises(TransportError) as info:
                await client.ping(Endpoint(("https://registry.invalid",)))
            assert str(info.value) == (
                'Get "https://registry.invalid/v2/": '
                "proxyconnect tcp: dial tcp 127.0.0.1:9: connect: connection refused"
            )
            # Loopback is never proxied: the refusal comes from the target port itself.
            with pytest.raises(TransportError, match=r"dial tcp 127.0.0.1:1: connect: connection refused"):
                await client.ping(Endpoint(("http://127.0.0.1:1",), verify=False))
        finally:
            await client.aclose()

    assert os.environ["HTTPS_PROXY"]
    asyncio.run(go())
