"""Pull, push and login routes through httpx.ASGITransport, the real ImageService on a temp data
root, and an in-memory registry (engine/images/tests/fakeregistry.py) behind httpx.MockTransport."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.config import DaemonConfig
from engine.events import EventBus
from engine.images.service import ImageService
from engine.images.tests.fakeregistry import FakeRegistry, make_image
from engine.system import SystemService
from engine.wiring import Services, prepare_roots
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore
from storage.snapshots import OverlaySnapshotter

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def registry() -> FakeRegistry:
    fake = FakeRegistry(auth="basic")
    fake.put_image("team/app", "v1", make_image([{"hello": b"hello\n"}]))
    return fake


@pytest.fixture
async def client(tmp_path: Path, registry: FakeRegistry) -> AsyncIterator[httpx.AsyncClient]:
    config = DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec")
    prepare_roots(config)
    events = EventBus()
    content = ContentStore(config.data_root / "content")
    layers = LayerStore(content, OverlaySnapshotter(config.data_root / "overlay"))
    images = ImageService(
        ImageStore(config.data_root / "image", content), layers, content, events,
        registry_transport=registry.transport(),
    )  # fmt: skip
    system = SystemService(config, images=images, events=events)
    services = Services(
        config=config,
        events=events,
        system=system,
        images=images,
        containers=unused("containers"),
        execs=unused("execs"),
        volumes=unused("volumes"),
        networks=unused("networks"),
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c
    await images.aclose()


def header(doc: dict[str, str], *, padded: bool = False) -> dict[str, str]:
    raw = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    return {"X-Registry-Auth": raw if padded else raw.rstrip("=")}


ALICE = {"username": "alice", "password": "secret", "serveraddress": "reg.test"}


async def test_pull_route_stream_and_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1.47/images/create?fromImage=reg.test/team/app&tag=v1", headers=header(ALICE))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    lines = r.content.split(b"\r\n")
    assert lines[0] == b'{"status":"Pulling from team/app","id":"v1"}'
    assert lines[-2] == b'{"status":"Status: Downloaded newer image for reg.test/team/app:v1"}'
    assert lines[-1] == b""
    r = await client.get("/images/reg.test/team/app:v1/json")
    assert r.status_code == 200 and r.json()["RepoDigests"][0].startswith("reg.test/team/app@sha256:")

    r = await client.post("/images/create?fromImage=reg.test/team/app&tag=nope", headers=header(ALICE))
    assert (r.status_code, r.json()) == (
        404, {"message": "manifest for reg.test/team/app:nope not found: manifest unknown: manifest unknown"}
    )  # fmt: skip
    # No credentials for a basic-auth registry: dockerd's wording, a 500 before any output.
    r = await client.post("/images/create?fromImage=reg.test/team/app&tag=v1")
    assert r.status_code == 500
    assert (
        r.json()["message"] == 'Head "https://reg.test/v2/team/app/manifests/v1": no basic auth credentials'
    )
    r = await client.post("/images/create?fromImage=reg.test/team/app&tag=v1&platform=windows/amd64")
    assert r.status_code == 400


async def test_push_route(client: httpx.AsyncClient, registry: FakeRegistry) -> None:
    await client.post("/images/create?fromImage=reg.test/team/app&tag=v1", headers=header(ALICE, padded=True))
    assert (
        await client.post("/images/reg.test/team/app:v1/tag?repo=reg.test/team/copy&tag=c1")
    ).status_code == 201
    r = await client.post("/images/reg.test/team/copy/push?tag=c1", headers=header(ALICE))
    assert r.status_code == 200
    messages = [json.loads(line) for line in r.content.splitlines() if line]
    assert messages[0] == {"status": "The push refers to repository [reg.test/team/copy]"}
    assert messages[-1]["aux"]["Tag"] == "c1"
    assert "c1" in registry.manifests["team/copy"]


async def test_auth_route(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1.47/auth", json=ALICE)
    assert r.status_code == 200
    assert r.content == b'{"IdentityToken":"","Status":"Login Succeeded"}\n'
    r = await client.post("/auth", json={**ALICE, "password": "wrong"})
    assert (r.status_code, r.json()) == (
        401, {"message": "login attempt to https://reg.test/v2/ failed with status: 401 Unauthorized"}
    )  # fmt: skip
    r = await client.post("/auth", content=b"")
    assert (r.status_code, r.json()) == (500, {"message": "EOF"})
