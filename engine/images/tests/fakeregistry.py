"""An in-memory distribution registry behind ``httpx.MockTransport``, for the registry unit tests.

It speaks enough of the protocol for skiff's client (ping, manifests by tag and digest, blobs,
uploads: monolithic, chunked, streamed, cross-repository mounts, tags) and can demand basic or
bearer auth (with its own token endpoint), serve corrupt blobs, fail, or hold a blob until told.
Every request is recorded as ``(method, path)``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.images.tests.imagetars import compress, layer_tar, sha

MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REALM = "https://auth.test/token"


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


@dataclass
class Image:
    config: bytes
    layers: list[bytes]  # blobs as stored in the registry (gzip)
    manifest: bytes

    @property
    def id(self) -> str:
        return sha(self.config)

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def make_image(files: list[dict[str, bytes]], arch: str = "amd64", variant: str = "", **config: Any) -> Image:
    tars = [layer_tar(f) for f in files]
    blobs = [compress(t, "gzip") for t in tars]
    doc: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["sh"], **config},
        "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in tars]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(tars))],
    }
    if variant:
        doc["variant"] = variant
    cfg = json.dumps(doc, separators=(",", ":")).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "size": len(cfg), "digest": sha(cfg)},
            "layers": [{"mediaType": MT_LAYER, "size": len(b), "digest": sha(b)} for b in blobs],
        },
        indent=3,
    ).encode()
    return Image(cfg, blobs, manifest)


@dataclass
class FakeRegistry:
    auth: str | None = None  # None, "basic" or "bearer"
    users: dict[str, str] = field(default_factory=lambda: {"alice": "secret"})
    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo → digest → data
    manifests: dict[str, dict[str, tuple[str, bytes]]] = field(
        default_factory=dict
    )  # repo → ref → (type, body)
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_requests: list[httpx.Request] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)  # digests served with wrong bytes
    broken: set[str] = field(default_factory=set)  # digests that answer 500
    holds: dict[str, asyncio.Event] = field(default_factory=dict)  # digests held until set
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # token → (user, scopes)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    patches: list[str] = field(default_factory=list)  # Content-Range of each PATCH ("" when streamed)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- content -----------------------------------------------------------------------------------

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        self.blobs.setdefault(repo, {})[digest] = data
        return digest

    def put_image(self, repo: str, tag: str | None, image: Image) -> str:
        for blob in [image.config, *image.layers]:
            self.put_blob(repo, blob)
        return self.put_manifest(repo, tag, MT_MANIFEST, image.manifest)

    def put_manifest(self, repo: str, tag: str | None, media_type: str, body: bytes) -> str:
        digest = sha(body)
        refs = self.manifests.setdefault(repo, {})
        refs[digest] = (media_type, body)
        if tag:
            refs[tag] = (media_type, body)
        return digest

    def count(self, method: str, suffix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith(suffix))

    # --- auth --------------------------------------------------------------------------------------

    def _challenge(self, scope: str, error: str = "") -> httpx.Response:
        if self.auth == "basic":
            header = 'Basic realm="fake"'
        else:
            header = f'Bearer realm="{REALM}",service="fake.test"'
            if scope:
                header += f',scope="{scope}"'
            if error:
                header += f',error="{error}"'
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": header},
            content=error_body("UNAUTHORIZED", "authentication required"),
        )

    def _authorized(self, request: httpx.Request, scope: str) -> httpx.Response | None:
        if self.auth is None:
            return None
        header = request.headers.get("authorization", "")
        if self.auth == "basic":
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(user) == password:
                    return None
            return self._challenge(scope)
        if not header.startswith("Bearer "):
            return self._challenge(scope)
        grant = self.tokens.get(header[7:])
        if grant is None:
            return self._challenge(scope, "invalid_token")
        if scope and not any(_covers(g, scope) for g in grant[1]):
            return self._challenge(scope, "insufficient_scope")
        return None

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests.append(request)
        user: str | None = None
        scopes: list[str]
        if request.method == "POST":
            form = urllib.parse.parse_qs(request.content.decode())
            user = self.refresh_tokens.get(form.get("refresh_token", [""])[0])
            if user is None:
                return httpx.Response(401, json={"details": "invalid refresh token"})
            scopes = form.get("scope", [""])[0].split()
        else:
            query = urllib.parse.parse_qs(request.url.query.decode())
            header = request.headers.get("authorization", "")
            if header.startswith("Basic "):
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if self.users.get(name) != password:
                    return httpx.Response(401, json={"details": "incorrect username or password"})
                user = name
            scopes = query.get("scope", [])
        token = secrets.token_hex(8)
        # Anonymous users may only pull repositories under public/.
        granted = [s for s in scopes if user or (s.startswith("repository:public/") and s.endswith(":pull"))]
        self.tokens[token] = (user or "", granted)
        body: dict[str, Any] = {"token": token, "expires_in": 300}
        if user and ("offline_token=true" in str(request.url) or request.method == "POST"):
            refresh = secrets.token_hex(8)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        return httpx.Response(200, json=body)

    # --- the protocol ------------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if f"https://{url.host}{url.path}" == REALM:
            return self._token(request)
        path = url.path
        self.requests.append((request.method, path))
        if path == "/v2/":
            denied = self._authorized(request, "")
            return denied or httpx.Response(200, json={})
        rest = path[len("/v2/") :]
        for marker in ("/manifests/", "/blobs/uploads/", "/blobs/", "/tags/list"):
            if marker in rest:
                repo, _, tail = rest.partition(marker)
                break
        else:
            return httpx.Response(404)
        write = request.method in ("PUT", "POST", "PATCH", "DELETE")
        scope = f"repository:{repo}:{'pull,push' if write else 'pull'}"
        denied = self._authorized(request, scope)
        if denied is not None:
            return denied
        if marker == "/manifests/":
            return self._manifest(request, repo, tail)
        if marker == "/tags/list":
            tags = sorted(r for r in self.manifests.get(repo, {}) if not r.startswith("sha256:"))
            return httpx.Response(200, json={"name": repo, "tags": tags})
        if marker == "/blobs/uploads/":
            return await self._upload(request, repo, tail)
        return await self._blob(request, repo, tail)

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            digest = self.put_manifest(repo, ref, request.headers["content-type"], request.content)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        found = self.manifests.get(repo, {}).get(ref)
        if found is None:
            if request.method == "HEAD":
                return httpx.Response(404)
            return httpx.Response(404, content=error_body("MANIFEST_UNKNOWN", "manifest unknown"))
        media_type, body = found
        headers = {"Content-Type": media_type, "Docker-Content-Digest": sha(body)}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return httpx.Response(200, headers=headers)
        return httpx.Response(200, headers=headers, content=body)

    async def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        data = self.blobs.get(repo, {}).get(digest)
        if data is None:
            if request.method == "HEAD":
                return httpx.Response(404)
            return httpx.Response(404, content=error_body("BLOB_UNKNOWN", "blob unknown to registry"))
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        hold = self.holds.get(digest)
        if hold is not None:
            await hold.wait()
        if digest in self.broken:
            return httpx.Response(500, text="boom")
        if digest in self.corrupt:
            data = bytes(reversed(data))
        return httpx.Response(200, content=data, headers={"Content-Length": str(len(data))})

    async def _upload(self, request: httpx.Request, repo: str, tail: str) -> httpx.Response:
        query = urllib.parse.parse_qs(request.url.query.decode())
        if request.method == "POST":
            mount, source = query.get("mount", [""])[0], query.get("from", [""])[0]
            if mount and mount in self.blobs.get(source, {}):
                self.blobs.setdefault(repo, {})[mount] = self.blobs[source][mount]
                return httpx.Response(201, headers={"Docker-Content-Digest": mount})
            uid = secrets.token_hex(4)
            self.uploads[uid] = bytearray()
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=x"})
        uid = tail
        if uid not in self.uploads:
            return httpx.Response(404, content=error_body("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"))
        body = await request.aread()
        if request.method == "PATCH":
            self.patches.append(request.headers.get("content-range", ""))
            self.uploads[uid] += body
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=y"})
        if request.method == "PUT":
            data = bytes(self.uploads.pop(uid) + body)
            digest = query["digest"][0]
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                return httpx.Response(400, content=error_body("DIGEST_INVALID", "digest invalid"))
            self.blobs.setdefault(repo, {})[digest] = data
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if request.method == "DELETE":
            self.uploads.pop(uid, None)
            return httpx.Response(204)
        return httpx.Response(405)


def _covers(granted: str, wanted: str) -> bool:
    g_kind, _, g_rest = granted.partition(":")
    w_kind, _, w_rest = wanted.partition(":")
    g_name, _, g_actions = g_rest.rpartition(":")
    w_name, _, w_actions = w_rest.rpartition(":")
    return g_kind == w_kind and g_name == w_name and set(w_actions.split(",")) <= set(g_actions.split(","))
