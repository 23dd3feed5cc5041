"""The distribution (OCI registry) HTTP client: endpoints, auth flows, manifests and blobs.

``RegistryClient`` is one per daemon. It owns the httpx clients (one per TLS-verification and proxy
mode), the bearer-token cache and what it learnt about each host (HTTPS or plain HTTP).
``open(domain, path, auth, actions)`` pings ``/v2/`` and returns a ``Repository`` bound to one
endpoint, which signs each request as the ping's ``WWW-Authenticate`` asked: nothing, basic, or a
bearer token from the realm (GET with basic credentials, or POST with the identity token as
refresh_token). Credentials only ever go into request headers and form bodies.

Where each registry is reached (HTTPS or plain HTTP, mirrors) is engine/images/endpoints.py.
Loopback hosts are always reached directly; others honour ``HTTP(S)_PROXY``/``NO_PROXY`` (httpx's
``trust_env``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx

from engine import errdefs
from engine.images import manifest as mf
from engine.images.endpoints import Endpoint, RegistryOptions, endpoints, is_loopback, registry_host
from engine.images.regauth import AuthConfig, Challenge, TokenCache, parse_challenges, repository_scope
from engine.images.regerrors import RegistryError, TransportError, from_response, transport_error

# httpx logs every request line at INFO (token URLs carry the account name): not in the daemon's log.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

AUTH_CLIENT_ID = "docker"
USER_AGENT = "skiff (docker-compatible)"
TIMEOUT = httpx.Timeout(30.0, read=120.0, write=120.0)


class RegistryClient:
    def __init__(
        self, options: RegistryOptions | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.options = options or RegistryOptions()
        self._transport = transport
        self._clients: dict[tuple[bool, bool], httpx.AsyncClient] = {}
        self.tokens = TokenCache()
        self._working_url: dict[Endpoint, str] = {}

    def http(self, url: str, verify: bool = True) -> httpx.AsyncClient:
        """The httpx client for ``url``: direct for loopback, through the environment's proxy otherwise."""
        proxied = self._transport is None and not is_loopback(httpx.URL(url).host)
        key = (verify, proxied)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport,
                verify=verify,
                trust_env=proxied,
                timeout=TIMEOUT,
                follow_redirects=True,
                headers={"User-Agent": USER_AGENT},
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def endpoints(self, domain: str, *, mirrors: bool = True) -> list[Endpoint]:
        return endpoints(domain, self.options, mirrors=mirrors)

    async def ping(self, endpoint: Endpoint) -> tuple[str, list[Challenge]]:
        """GET /v2/ on the endpoint's first working URL: that URL and its auth challenges."""
        urls = list(endpoint.urls)
        known = self._working_url.get(endpoint)
        if known in urls:
            urls.remove(known)
            urls.insert(0, known)
        last: TransportError | None = None
        for base in urls:
            url = f"{base}/v2/"
            try:
                resp = await self.http(url, endpoint.verify).get(url)
            except httpx.TransportError as e:
                last = transport_error("GET", httpx.URL(url), e)
                continue
            self._working_url[endpoint] = base
            return base, parse_challenges(resp.headers.get_list("www-authenticate"))
        assert last is not None
        raise last

    async def open(
        self, endpoint: Endpoint, path: str, auth: AuthConfig, actions: tuple[str, ...]
    ) -> Repository:
        base, challenges = await self.ping(endpoint)
        return Repository(self, base, endpoint.verify, path, auth, actions, challenges)

    async def login(self, auth: AuthConfig) -> str:
        """Check credentials the way ``docker login`` does; returns the identity token (may be "")."""
        domain = registry_host(auth.serveraddress)
        last: Exception | None = None
        for endpoint in self.endpoints(domain, mirrors=False):
            try:
                base, challenges = await self.ping(endpoint)
            except TransportError as e:
                last = e
                continue
            session = Repository(self, base, endpoint.verify, "", auth, (), challenges, offline=True)
            url = f"{base}/v2/"
            try:
                headers = await session.auth_headers("GET", url, [])
            except TransportError as e:
                if isinstance(e.__cause__, RegistryError) and e.__cause__.code == "UNAUTHORIZED":
                    raise errdefs.Unauthorized(str(e)) from None
                raise errdefs.Internal(str(e)) from None
            try:
                resp = await self.http(url, endpoint.verify).get(url, headers=headers)
            except httpx.TransportError as e:
                raise errdefs.Internal(str(transport_error("GET", httpx.URL(url), e))) from None
            if resp.status_code != 200:
                raise errdefs.Unauthorized(
                    f"login attempt to {url} failed with status: {resp.status_code} {resp.reason_phrase}"
                )
            return session.refresh_token
        raise errdefs.Internal(str(last))


@dataclass
class Upload:
    location: str


@dataclass
class Repository:
    """One repository on one endpoint, with the credentials and actions it was opened for."""

    client: RegistryClient
    base: str
    verify: bool
    path: str
    auth: AuthConfig
    actions: tuple[str, ...]
    challenges: list[Challenge]
    offline: bool = False
    refresh_token: str = ""
    _fresh: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return httpx.URL(self.base).netloc.decode()

    def url(self, suffix: str) -> str:
        return f"{self.base}/v2/{self.path}/{suffix}"

    def scopes(self, extra: Sequence[str] = ()) -> list[str]:
        own = [repository_scope(self.path, self.actions)] if self.path else []
        return own + list(extra)

    # --- authorization -------------------------------------------------------------------------

    async def auth_headers(self, method: str, url: str, scopes: Sequence[str]) -> dict[str, str]:
        challenge = next((c for c in self.challenges if c.scheme in ("bearer", "basic")), None)
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            user, password = self.auth.credentials()
            if not (user and password):
                raise TransportError(method, url, "no basic auth credentials", auth_failure=True)
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if self.auth.registrytoken:
            return {"Authorization": f"Bearer {self.auth.registrytoken}"}
        try:
            token = await self._token(challenge, list(scopes))
        except (RegistryError, TransportError, errdefs.EngineError) as e:
            raise TransportError(method, url, str(e), auth_failure=True) from e
        return {"Authorization": f"Bearer {token}"}

    def _token_key(self, challenge: Challenge, scopes: list[str]) -> tuple[str, ...]:
        params = challenge.params
        return (params.get("realm", ""), params.get("service", ""), " ".join(scopes), self.auth.fingerprint())

    async def _token(self, challenge: Challenge, scopes: list[str]) -> str:
        key = self._token_key(challenge, scopes)
        cached = self.client.tokens.get(key)
        if cached is not None and not self.offline:
            self._fresh = False
            return cached
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise errdefs.Internal(f"token auth attempt for registry: {self.base}: invalid realm {realm!r}")
        service = challenge.params.get("service", "")
        http = self.client.http(realm, self.verify)
        user, password = self.auth.credentials()
        try:
            if self.auth.identitytoken:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": self.auth.identitytoken,
                    "service": service,
                    "client_id": AUTH_CLIENT_ID,
                    "scope": " ".join(scopes),
                }
                if self.offline:
                    form["access_type"] = "offline"
                resp = await http.post(realm, data=form)
            else:
                query: list[tuple[str, str | int | float | bool | None]] = (
                    [("service", service)] if service else []
                )
                query += [("scope", s) for s in scopes]
                if user:
                    query.append(("account", user))
                if self.offline:
                    query += [("offline_token", "true"), ("client_id", AUTH_CLIENT_ID)]
                basic = httpx.BasicAuth(user, password) if user and password else None
                resp = await http.get(realm, params=query, auth=basic)
        except httpx.TransportError as e:
            raise transport_error("POST" if self.auth.identitytoken else "GET", httpx.URL(realm), e) from None
        if resp.status_code != 200:
            raise from_response(resp.status_code, resp.headers, resp.content)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        token = body.get("access_token") or body.get("token") if isinstance(body, dict) else None
        if not token:
            raise errdefs.Internal("authorization server did not include a token in the response")
        if body.get("refresh_token"):
            self.refresh_token = str(body["refresh_token"])
        self.client.tokens.put(key, str(token), body.get("expires_in") or 60)
        self._fresh = True
        return str(token)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        scopes: Sequence[str] = (),
        stream: bool = False,
    ) -> httpx.Response:
        """One authorized request; a 401 with a cached token is retried once with a fresh one."""
        scopes = list(scopes) or self.scopes()
        http = self.client.http(url, self.verify)
        for attempt in (0, 1):
            auth = await self.auth_headers(method, url, scopes)
            request = http.build_request(method, url, headers={**(headers or {}), **auth}, content=content)
            try:
                resp = await http.send(request, stream=stream)
            except httpx.TransportError as e:
                raise transport_error(method, httpx.URL(url), e) from None
            bearer = auth.get("Authorization", "").startswith("Bearer ")
            if resp.status_code == 401 and attempt == 0 and bearer and not self._fresh and content is None:
                await resp.aclose()
                challenge = next(c for c in self.challenges if c.scheme == "bearer")
                self.client.tokens.drop(self._token_key(challenge, scopes))
                continue
            return resp
        raise AssertionError("unreachable")

    async def _check(self, resp: httpx.Response, ok: Sequence[int] = (200,)) -> httpx.Response:
        if resp.status_code in ok:
            return resp
        body = await resp.aread()
        raise from_response(resp.status_code, resp.headers, body)

    # --- manifests ---------------------------------------------------------------------------------

    async def resolve(self, tag: str) -> mf.Descriptor | None:
        """HEAD a tag: its descriptor, or None when the registry does not say (then GET it)."""
        resp = await self.send("HEAD", self.url(f"manifests/{tag}"), headers={"Accept": mf.ACCEPT})
        digest = resp.headers.get("docker-content-digest", "")
        if 200 <= resp.status_code < 300 and digest.startswith("sha256:"):
            media_type = resp.headers.get("content-type", "").split(";")[0]
            return mf.Descriptor(media_type, digest, int(resp.headers.get("content-length") or 0))
        return None

    async def manifest(self, ref: str, name: str) -> mf.Manifest:
        """GET a manifest by tag or digest; ``name`` is the image named in errors."""
        resp = await self.send(
            "GET", self.url(f"manifests/{ref}"), headers={"Accept": mf.ACCEPT}, stream=True
        )
        try:
            await self._check(resp)
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > mf.MAX_MANIFEST_SIZE:
                    raise errdefs.InvalidParameter(
                        f"manifest too big: more than {mf.MAX_MANIFEST_SIZE} bytes"
                    )
        finally:
            await resp.aclose()
        return mf.parse(resp.headers.get("content-type", ""), bytes(data), name)

    async def put_manifest(self, tag: str, media_type: str, body: bytes) -> str:
        resp = await self.send(
            "PUT", self.url(f"manifests/{tag}"), headers={"Content-Type": media_type}, content=body
        )
        await self._check(resp, (200, 201, 202))
        return mf.sha256_digest(body)

    async def tags(self) -> list[str]:
        out: list[str] = []
        url: str | None = self.url("tags/list")
        while url:
            resp = await self._check(await self.send("GET", url))
            out += [str(t) for t in (resp.json().get("tags") or [])]
            link = resp.links.get("next", {}).get("url")
            url = urllib.parse.urljoin(url, link) if link else None
        return out

    # --- blobs -------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def blob(self, digest: str, offset: int = 0) -> AsyncIterator[tuple[int, httpx.Response]]:
        """GET a blob: (bytes still to come, streaming response). ``offset`` resumes with a Range."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        resp = await self.send("GET", self.url(f"blobs/{digest}"), headers=headers, stream=True)
        try:
            await self._check(resp, (200, 206) if offset else (200,))
            if offset and resp.status_code == 200:
                raise TransportError("GET", self.url(f"blobs/{digest}"), "range not honoured")
            yield int(resp.headers.get("content-length") or 0), resp
        finally:
            await resp.aclose()

    async def blob_bytes(self, digest: str, limit: int) -> bytes:
        async with self.blob(digest) as (_, resp):
            data = bytearray()
            async for chunk in resp.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise errdefs.InvalidParameter(f"blob {digest} is larger than {limit} bytes")
            return bytes(data)

    async def stat_blob(self, digest: str) -> int | None:
        """HEAD a blob: its size if the repository has it."""
        resp = await self.send("HEAD", self.url(f"blobs/{digest}"))
        if resp.status_code == 404:
            return None
        await self._check(resp, (200, 307))
        return int(resp.headers.get("content-length") or 0)

    async def start_upload(self, mount: tuple[str, str] | None = None) -> Upload | None:
        """POST an upload session; with ``mount=(digest, from_path)`` None means the blob was mounted."""
        url = self.url("blobs/uploads/")
        scopes = self.scopes()
        if mount is not None:
            url += "?" + urllib.parse.urlencode({"mount": mount[0], "from": mount[1]})
            scopes = self.scopes([repository_scope(mount[1], ("pull",))])
        resp = await self.send("POST", url, scopes=scopes)
        if mount is not None and resp.status_code == 201:
            return None
        await self._check(resp, (202,))
        return Upload(self._location(url, resp))

    def _location(self, url: str, resp: httpx.Response) -> str:
        location = str(resp.headers.get("location") or "")
        if not location:
            raise errdefs.Internal("registry did not return an upload location")
        return urllib.parse.urljoin(url, location)

    async def upload_chunk(self, upload: Upload, data: bytes, offset: int) -> None:
        """PATCH one chunk (OCI chunked upload: Content-Range, then the next Location)."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
        }
        resp = await self.send("PATCH", upload.location, headers=headers, content=data)
        await self._check(resp, (202, 204))
        upload.location = self._location(upload.location, resp)

    async def finish_upload(self, upload: Upload, digest: str, data: bytes = b"") -> None:
        """PUT ?digest=: closes a chunked upload, or is the whole monolithic upload when ``data`` is given."""
        sep = "&" if "?" in upload.location else "?"
        url = f"{upload.location}{sep}digest={urllib.parse.quote(digest)}"
        resp = await self.send("PUT", url, headers={"Content-Type": "application/octet-stream"}, content=data)
        await self._check(resp, (201, 204))

    async def cancel_upload(self, upload: Upload) -> None:
        with contextlib.suppress(TransportError, RegistryError, errdefs.EngineError):
            resp = await self.send("DELETE", upload.location)
            await resp.aclose()
