"""``GET /system/df`` through httpx.ASGITransport: containers from the admin harness (FakeRuntime,
real overlay snapshotter on a temp dir), a real VolumeService, images from a fake list.

Shapes as the reference dockerd answers them; ``type`` as dockerd 23+ (API 1.42) parses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.containers.exec import ExecService
from engine.events import EventBus
from engine.tests.test_containers_admin import IMAGE_ID, OTHER_ID, Harness
from engine.volumes.service import VolumeService
from engine.wiring import Services
from storage.volumes import VolumeStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class DfImages:
    """The two ImageService calls ``system df`` makes."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def list_images(
        self, filters: Any = None, all: bool = False, digests: bool = False, shared_size: bool = False
    ) -> list[dict[str, Any]]:
        self.calls.append({"all": all, "shared_size": shared_size})
        return [
            {"Containers": -1, "Created": 2, "Id": image_id, "Labels": None, "ParentId": "",
             "RepoDigests": [], "RepoTags": [tag], "SharedSize": 100, "Size": 300}
            for image_id, tag in ((IMAGE_ID, "busybox:latest"), (OTHER_ID, "other:latest"))
        ]  # fmt: skip

    async def layers_size(self) -> int:
        return 500


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def volumes(tmp_path: Path) -> VolumeService:
    return VolumeService(VolumeStore(tmp_path / "volumes"), EventBus())


@pytest.fixture
def images() -> DfImages:
    return DfImages()


@pytest.fixture
async def client(h: Harness, volumes: VolumeService, images: DfImages) -> AsyncIterator[httpx.AsyncClient]:
    volumes.set_usage_checker(h.service.mounts.volume_users)
    services = Services(
        config=cast(Any, None),
        events=h.bus,
        system=cast(Any, None),
        images=cast(Any, images),
        containers=h.service,
        execs=ExecService(h.service, h.bus),
        volumes=volumes,
        networks=unused("networks"),
    )
    app = create_app(services)
    app.state.containers_admin = h.admin
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c


async def test_df_everything(
    client: httpx.AsyncClient, h: Harness, volumes: VolumeService, images: DfImages
) -> None:
    await volumes.create("plain")
    (volumes.data_path("plain") / "f").write_bytes(b"x" * 1234)
    await volumes.create("tmp", options={"type": "tmpfs", "device": "tmpfs"})
    a = await h.create("dfa")
    b = await h.run("dfb")
    r = await client.get("/v1.50/system/df")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["LayersSize", "Images", "Containers", "Volumes", "BuildCache"]
    # BuildKit lists no record: dockerd answers null even when the build cache is asked for.
    assert body["LayersSize"] == 500 and body["BuildCache"] is None
    assert images.calls == [{"all": False, "shared_size": True}]
    by_id = {i["Id"]: i for i in body["Images"]}
    # Both harness containers use IMAGE_ID; the other image has none.
    assert by_id[IMAGE_ID]["Containers"] == 2 and by_id[OTHER_ID]["Containers"] == 0
    assert by_id[IMAGE_ID]["SharedSize"] == 100 and "VirtualSize" not in by_id[IMAGE_ID]
    rows = {c["Id"]: c for c in body["Containers"]}
    assert set(rows) == {a.id, b.id}  # stopped ones too
    assert rows[a.id]["SizeRootFs"] == h.layers.size(h.chain) and rows[a.id]["State"] == "created"
    vols = {v["Name"]: v for v in body["Volumes"]}
    assert vols["plain"]["UsageData"] == {"RefCount": 0, "Size": 1234}
    assert vols["plain"]["Driver"] == "local" and vols["plain"]["Scope"] == "local"
    assert vols["tmp"]["UsageData"] == {"RefCount": 0, "Size": -1}  # options: dockerd does not walk it


async def test_df_type_filter(client: httpx.AsyncClient, h: Harness, volumes: VolumeService) -> None:
    await volumes.create("only")
    await h.create("dfc")
    r = await client.get("/v1.50/system/df?type=volume")
    body = r.json()
    assert body["Images"] is None and body["Containers"] is None and body["BuildCache"] is None
    assert [v["Name"] for v in body["Volumes"]] == ["only"]
    r = await client.get("/v1.50/system/df", params=[("type", "container"), ("type", "build-cache")])
    body = r.json()
    assert len(body["Containers"]) == 1 and body["BuildCache"] is None
    assert body["Images"] is None and body["Volumes"] is None
    r = await client.get("/v1.50/system/df?type=image")
    assert r.json()["Images"][0]["Containers"] == 1 and r.json()["Containers"] is None
    r = await client.get("/v1.50/system/df?type=bogus")
    assert r.status_code == 400 and r.json() == {"message": "unknown object type: bogus"}


async def test_df_old_api(client: httpx.AsyncClient) -> None:
    # Before 1.42 ``type`` is ignored and the deprecated BuilderSize is present; before 1.44 VirtualSize.
    r = await client.get("/v1.41/system/df?type=bogus")
    assert r.status_code == 200
    body = r.json()
    assert body["BuilderSize"] == 0 and body["BuildCache"] is None and body["Containers"] == []
    assert all(i["VirtualSize"] == i["Size"] for i in body["Images"])


async def test_build_prune(client: httpx.AsyncClient) -> None:
    nothing = {"CachesDeleted": None, "SpaceReclaimed": 0}
    r = await client.post("/v1.50/build/prune")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == nothing
    ok_filters = '{"label":{"a=b":true},"until":{"24h":true},"type":{"regular":true}}'
    r = await client.post(
        "/v1.50/build/prune", params={"all": "1", "filters": ok_filters, "keep-storage": "10"}
    )
    assert r.status_code == 200 and r.json() == nothing
    r = await client.post(
        "/v1.41/build/prune", params={"filters": '{"unused-for":["1h"]}', "keep-storage": "-5"}
    )
    assert r.status_code == 200 and r.json() == nothing
    prefix = "failed to prune build cache: "
    for params, message in [
        ({"filters": '{"bogus":{"x":true}}'}, prefix + "invalid filter 'bogus'"),
        ({"filters": '{"dangling":["true"]}'}, prefix + "invalid filter 'dangling'"),
        ({"filters": '{"until":["1h","2h"]}'}, prefix + "filters expect only one value"),
        ({"filters": '{"id":["a","b"]}'}, prefix + "filters expect only one value"),
        (
            {"filters": '{"until":["1h"],"unused-for":["2h"]}'},
            prefix + 'conflicting filters: "until" and "unused-for"',
        ),
        (
            {"filters": '{"until":["xyz"]}'},
            prefix + "\"until\" filter expects a duration (e.g., '24h') or a timestamp: "
            "failed to parse value as time or duration: 'xyz'",
        ),
        (
            {"keep-storage": "1.5"},
            "keep-storage is in bytes and expects an integer, got 1.5: "
            'strconv.Atoi: parsing "1.5": invalid syntax',
        ),
    ]:
        r = await client.post("/v1.50/build/prune", params=params)
        assert (r.status_code, r.json()) == (400, {"message": message}), params
    # reserved-space and the other space options exist from API 1.48; before, they are not read.
    r = await client.post("/v1.50/build/prune", params={"max-used-space": "x"})
    assert r.status_code == 400 and r.json()["message"].startswith("max-used-space is in bytes")
    r = await client.post("/v1.47/build/prune", params={"max-used-space": "x"})
    assert r.status_code == 200
    r = await client.post("/v1.50/build/prune", params={"reserved-space": "10", "keep-storage": "x"})
    assert r.status_code == 200  # keep-storage is only read when reserved-space is not given
