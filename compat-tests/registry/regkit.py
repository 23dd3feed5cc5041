"""Test kit for the registry suites: Debian's docker-registry on loopback, a token server of our own,
a throttling relay, and a crane-like uploader that puts images and indexes into a registry.

Every process and thread started here is stopped by PID / by shutdown() in ``close()``; the
fixtures in conftest.py call it from finalizers. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import secrets
import signal
import socket
import socketserver
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx

DOCKER_REGISTRY = "/usr/bin/docker-registry"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Test-only credentials of registries that live for one test session.
TEST_USERS = {"alice": "wonderland"}
SERVICE = "skiff-test-registry"
ISSUER = "skiff-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes], mtime: int = 1700000000) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


# --- processes -------------------------------------------------------------------------------------


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"docker-registry exited with {proc.returncode}:\n{text[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Registry:
    """One docker-registry process; ``auth`` is None, "htpasswd" or "token"."""

    def __init__(
        self,
        tmp: Path,
        auth: str | None = None,
        users: dict[str, str] | None = None,
        token: TokenServer | None = None,
    ) -> None:
        self.tmp = tmp
        self.auth = auth
        self.users = users or {}
        self.token = token
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "registry.log"
        self.config = tmp / "config.yml"
        tmp.mkdir(parents=True, exist_ok=True)
        self._write_config()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.tmp / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.auth == "htpasswd":
            htpasswd = self.tmp / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4, prefix=b'2a')).decode()}\n"
                    for u, p in self.users.items()
                )
            )
            lines += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {htpasswd}"]
        elif self.auth == "token":
            assert self.token is not None
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.url}/token",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {self.token.cert}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> Registry:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [DOCKER_REGISTRY, "serve", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_listening(self.port, self.proc, self.log)
        return self

    def kill(self) -> None:
        """SIGKILL by PID (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def requests(self) -> list[str]:
        """``METHOD /path`` of every request the registry logged (its access log)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            parts = line.split('"')
            if len(parts) > 2 and parts[1].split(" ")[0] in ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"):
                method, path = parts[1].split(" ")[:2]
                out.append(f"{method} {path}")
        return out

    def close(self) -> None:
        self.kill()


# --- token server ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token server (distribution's token auth spec) on a loopback thread.

    Users authenticate with basic auth (GET) or with a form (POST, password or refresh_token grant).
    An authenticated user gets every action it asks for; anonymous requests get none. Tokens are
    RS256 JWTs carrying the signing certificate in ``x5c``; the registry trusts that certificate.
    """

    def __init__(self, tmp: Path, users: dict[str, str]) -> None:
        self.tmp = tmp
        self.users = users
        self.refresh_tokens: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        tmp.mkdir(parents=True, exist_ok=True)
        self.key = tmp / "token.key"
        self.cert = tmp / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "2",
                "-subj",
                "/CN=skiff-test-token",
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        server = self
        self._sign_lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = server._basic_user(self.headers.get("Authorization", ""))
                server.requests.append({"method": "GET", "query": query, "user": user})
                if user is False:
                    return self._send(401, {"details": "incorrect username or password"})
                offline = query.get("offline_token", [""])[0] == "true"
                self._send(200, server._grant(user or None, query.get("scope", []), offline))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                server.requests.append({"method": "POST", "form": form})
                grant = form.get("grant_type", [""])[0]
                user: str | None = None
                if grant == "password":
                    name, password = form.get("username", [""])[0], form.get("password", [""])[0]
                    if server.users.get(name) != password:
                        return self._send(401, {"details": "incorrect username or password"})
                    user = name
                elif grant == "refresh_token":
                    user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                    if user is None:
                        return self._send(401, {"details": "invalid refresh token"})
                else:
                    return self._send(400, {"details": "unsupported grant type"})
                scopes = form.get("scope", [""])[0].split(" ") if form.get("scope") else []
                body = server._grant(user, scopes, True)
                self._send(200, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _basic_user(self, header: str) -> str | bool:
        """ "" for anonymous, the name for good credentials, False for bad ones."""
        if not header.startswith("Basic "):
            return ""
        name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return name if self.users.get(name) == password else False

    def _grant(self, user: str | None, scopes: Sequence[str], offline: bool) -> dict[str, Any]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and user:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        token = self.sign(user or "", access)
        body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": 300}
        if offline and user:
            refresh = secrets.token_hex(16)
            self.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        return body

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        with self._sign_lock:
            signature = subprocess.run(
                ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                input=signing_input.encode(),
                check=True,
                capture_output=True,
            ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


# --- a throttling relay ---------------------------------------------------------------------------


class SlowRelay:
    """TCP relay on loopback that sends the upstream's answers at ``rate`` bytes per second.

    Lets a test kill the registry while a download is provably under way.
    """

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    up = socket.create_connection(("127.0.0.1", relay.upstream_port), timeout=5)
                except OSError:
                    return
                up.settimeout(None)
                down: socket.socket = self.request
                t = threading.Thread(target=relay._pump, args=(down, up, 0), daemon=True)
                t.start()
                relay._pump(up, down, relay.rate)
                t.join(timeout=5)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rate: int) -> None:
        chunk = 16384
        try:
            while True:
                data = src.recv(chunk)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- uploading images (crane-like) ----------------------------------------------------------------


@dataclass
class Pushed:
    repo: str
    ref: str
    digest: str
    manifest: bytes
    config: bytes
    layers: list[bytes] = field(default_factory=list)

    @property
    def image_id(self) -> str:
        return sha(self.config)


class Uploader:
    """Puts blobs, manifests and indexes into a registry with plain HTTP (like crane would)."""

    def __init__(
        self, host: str, auth: tuple[str, str] | None = None, token: TokenServer | None = None
    ) -> None:
        self.base = f"http://{host}"
        self.auth = auth
        self.token = token
        self.client = httpx.Client(timeout=60, trust_env=False)

    def _headers(self, repo: str) -> dict[str, str]:
        if self.token is not None:
            user = self.auth[0] if self.auth else "admin"
            jwt = self.token.sign(user, [{"type": "repository", "name": repo, "actions": ["pull", "push"]}])
            return {"Authorization": f"Bearer {jwt}"}
        if self.auth is not None:
            raw = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    def blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        headers = self._headers(repo)
        r = self.client.post(f"{self.base}/v2/{repo}/blobs/uploads/", headers=headers)
        assert r.status_code == 202, r.text
        location = urllib.parse.urljoin(self.base, r.headers["Location"])
        sep = "&" if "?" in location else "?"
        r = self.client.put(f"{location}{sep}digest={digest}", content=data, headers=headers)
        assert r.status_code == 201, r.text
        return digest

    def manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        r = self.client.put(
            f"{self.base}/v2/{repo}/manifests/{ref}",
            content=body,
            headers={**self._headers(repo), "Content-Type": media_type},
        )
        assert r.status_code == 201, r.text
        return sha(body)

    def image(
        self,
        repo: str,
        tag: str,
        layers: Sequence[bytes],
        *,
        arch: str = "amd64",
        variant: str = "",
        oci: bool = False,
        cmd: Sequence[str] = ("sh",),
        labels: dict[str, str] | None = None,
        compressed: bool = True,
    ) -> Pushed:
        """An image of plain layer tars (gzip-compressed for the registry unless ``compressed=False``)."""
        diff_ids = [sha(layer) for layer in layers]
        config: dict[str, Any] = {
            "architecture": arch,
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": list(cmd),
                "Labels": labels or None,
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [
                {"created": "2023-11-14T22:13:20Z", "created_by": f"layer {i}"} for i in range(len(layers))
            ],
        }
        if variant:
            config["variant"] = variant
        config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
        blobs = [gz(layer) if compressed else layer for layer in layers]
        layer_type = MT_OCI_LAYER if oci else MT_DOCKER_LAYER
        if not compressed:
            layer_type = (
                "application/vnd.oci.image.layer.v1.tar"
                if oci
                else "application/vnd.docker.image.rootfs.diff.tar"
            )
        for b in blobs:
            self.blob(repo, b)
        self.blob(repo, config_bytes)
        manifest_type = MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST
        doc = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": MT_OCI_CONFIG if oci else MT_DOCKER_CONFIG,
                "size": len(config_bytes),
                "digest": sha(config_bytes),
            },
            "layers": [{"mediaType": layer_type, "size": len(b), "digest": sha(b)} for b in blobs],
        }
        body = json.dumps(doc, indent=3).encode()
        digest = self.manifest(repo, tag, body, manifest_type)
        return Pushed(repo, tag, digest, body, config_bytes, list(blobs))

    def index(
        self, repo: str, tag: str, images: Sequence[tuple[Pushed, dict[str, str]]], oci: bool = True
    ) -> str:
        media_type = MT_OCI_INDEX if oci else MT_DOCKER_LIST
        doc = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
                    "size": len(p.manifest),
                    "digest": p.digest,
                    "platform": plat,
                }
                for p, plat in images
            ],
        }
        return self.manifest(repo, tag, json.dumps(doc).encode(), media_type)

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def closing_all(*things: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in reversed(things):
            with contextlib.suppress(Exception):
                thing.close()
