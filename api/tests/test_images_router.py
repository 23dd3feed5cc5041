"""Image routes through httpx.ASGITransport with the real ImageService on a temp data root.

Status codes, content types and bodies follow what dockerd answers (checked against the reference
dockerd 20.10; shapes per API 1.50 where they differ)."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.config import DaemonConfig
from engine.events import EventBus
from engine.images.service import ImageService
from engine.images.tests.imagetars import ArchiveImage, docker_archive, layer_tar
from engine.system import SystemService
from engine.wiring import Services, prepare_roots
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore
from storage.snapshots import OverlaySnapshotter

pytestmark = pytest.mark.anyio

JSON = "application/json"
L1 = layer_tar({"hello.txt": b"hello\n"})
L2 = layer_tar({"b.txt": b"bbb\n"})
IMG = ArchiveImage(["skiffimg/a:v1", "localhost:5000/x/y:2"], [L1, L2])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def services(tmp_path: Path) -> Services:
    # The image half of engine.wiring.build (no containers needed here).
    config = DaemonConfig(data_root=tmp_path / "data", exec_root=tmp_path / "exec")
    prepare_roots(config)
    events = EventBus()
    content = ContentStore(config.data_root / "content")
    layers = LayerStore(content, OverlaySnapshotter(config.data_root / "overlay"))
    images = ImageService(ImageStore(config.data_root / "image", content), layers, content, events)
    return Services(config=config, events=events, system=SystemService(config, images=images, events=events),
                    images=images, containers=unused("containers"), execs=unused("execs"),
                    volumes=unused("volumes"), networks=unused("networks"))  # fmt: skip


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c


def q(value: object) -> str:
    return urllib.parse.quote(json.dumps(value))


async def load(client: httpx.AsyncClient, data: bytes, query: str = "") -> httpx.Response:
    return await client.post(
        f"/images/load{query}", content=data, headers={"Content-Type": "application/x-tar"}
    )


async def test_load_list_inspect(client: httpx.AsyncClient) -> None:
    r = await load(client, docker_archive([IMG]), "?quiet=1")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert r.content == (
        b'{"stream":"Loaded image: skiffimg/a:v1\\n"}\r\n'
        b'{"stream":"Loaded image: localhost:5000/x/y:2\\n"}\r\n'
    )
    r = await client.get("/images/json")
    assert r.status_code == 200 and r.headers["content-type"] == JSON and r.text.endswith("}]\n")
    rows = r.json()
    assert [row["Id"] for row in rows] == [IMG.id] and "VirtualSize" not in rows[0]
    old = (await client.get("/v1.41/images/json")).json()
    assert old[0]["VirtualSize"] == old[0]["Size"] == 10 and old[0]["RepoDigests"] is None
    doc = (await client.get("/images/localhost:5000/x/y:2/json")).json()
    assert doc["Id"] == IMG.id and "ContainerConfig" not in doc and "VirtualSize" not in doc
    old_doc = (await client.get("/v1.41/images/localhost:5000/x/y:2/json")).json()
    assert old_doc["Container"] == "" and old_doc["ContainerConfig"]["Hostname"] == ""
    assert (
        old_doc["VirtualSize"] == 10 and list(old_doc).index("VirtualSize") == list(old_doc).index("Size") + 1
    )


async def test_load_progress_and_errors_are_in_stream(client: httpx.AsyncClient) -> None:
    r = await load(client, docker_archive([IMG]), "?quiet=0")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert lines[0]["status"] == "Loading layer" and lines[-1] == {
        "stream": "Loaded image: localhost:5000/x/y:2\n"
    }
    r = await load(client, b"garbage" * 100)
    assert r.status_code == 200
    (line,) = r.text.splitlines()
    error = json.loads(line)
    assert error["error"] == error["errorDetail"]["message"] and "Error processing tar file" in error["error"]


async def test_not_found_and_bad_names(client: httpx.AsyncClient) -> None:
    r = await client.get("/images/nonexist/json")
    assert (r.status_code, r.headers["content-type"], r.json()) == (
        404,
        JSON,
        {"message": "No such image: nonexist:latest"},
    )
    r = await client.get("/images/Bad/json")
    assert r.status_code == 400
    assert r.json() == {
        "message": "invalid reference format: repository name (library/Bad) must be lowercase"
    }
    assert (await client.get("/images/nonexist/history")).status_code == 404
    r = await client.get(f"/images/json?filters={q({'bogus': ['x']})}")
    assert (r.status_code, r.json()) == (400, {"message": "invalid filter 'bogus'"})
    r = await client.delete("/images/nonexist")
    assert (r.status_code, r.json()) == (404, {"message": "No such image: nonexist:latest"})


async def test_tag_history_delete(client: httpx.AsyncClient) -> None:
    await load(client, docker_archive([IMG]))
    r = await client.post("/images/skiffimg/a:v1/tag?repo=skiffimg/t&tag=x")
    assert (r.status_code, r.content) == (201, b"")
    r = await client.post("/images/skiffimg/a:v1/tag")
    assert r.status_code == 200
    r = await client.post("/images/skiffimg/a:v1/tag?repo=sha256&tag=abc")
    assert r.json() == {"message": "refusing to create an ambiguous tag using digest algorithm as name"}
    assert r.status_code == 400
    r = await client.post("/images/nonexist/tag?repo=ok&tag=x")
    assert r.status_code == 404
    history = (await client.get("/images/skiffimg/t:x/history")).json()
    assert [h["Id"] for h in history] == [IMG.id, "<missing>"]
    assert history[0]["Tags"] == ["skiffimg/a:v1", "skiffimg/t:x", "localhost:5000/x/y:2"]
    r = await client.delete("/images/localhost:5000/x/y:2")
    assert (r.status_code, r.json()) == (200, [{"Untagged": "localhost:5000/x/y:2"}])
    r = await client.delete(f"/images/{IMG.id[7:19]}")
    assert r.status_code == 409
    assert r.json()["message"].endswith("(must be forced) - image is referenced in multiple repositories")
    r = await client.delete(f"/images/{IMG.id[7:19]}?force=1")
    records = r.json()
    assert records[:3] == [{"Untagged": "skiffimg/a:v1"}, {"Untagged": "skiffimg/t:x"}, {"Deleted": IMG.id}]
    assert len(records) == 5  # and the two layers


async def test_save(client: httpx.AsyncClient) -> None:
    await load(client, docker_archive([IMG]))
    r = await client.get("/images/get?names=skiffimg/a:v1&names=localhost:5000/x/y:2")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["skiffimg/a:v1", "localhost:5000/x/y:2"]
    r = await client.get("/images/skiffimg/a:v1/get")
    assert r.status_code == 200 and r.content[:5] == b"blobs"
    r = await client.get("/images/get?names=nonexist")
    assert (r.status_code, r.json()) == (404, {"message": "No such image: nonexist"})


async def test_prune(client: httpx.AsyncClient) -> None:
    await load(client, docker_archive([ArchiveImage([], [L1])]))
    (row,) = (await client.get("/v1.42/images/json")).json()
    assert (row["RepoTags"], row["RepoDigests"]) == (["<none>:<none>"], ["<none>@<none>"])
    (row,) = (await client.get("/v1.43/images/json")).json()
    assert (row["RepoTags"], row["RepoDigests"]) == ([], [])
    r = await client.post(f"/images/prune?filters={q({'dangling': {'true': True}})}")
    assert r.status_code == 200
    report = r.json()
    assert report["SpaceReclaimed"] == 6 and len(report["ImagesDeleted"]) == 2
    r = await client.post("/images/prune")
    assert r.text == '{"ImagesDeleted":null,"SpaceReclaimed":0}\n'


async def test_import_and_pull(client: httpx.AsyncClient) -> None:
    fs = layer_tar({"etc/hello": b"hi\n"})
    changes = "&".join("changes=" + urllib.parse.quote(c) for c in ["ENV A=b", "CMD echo hi"])
    r = await client.post(f"/images/create?fromSrc=-&repo=skiffimg/imp&tag=1&message=m&{changes}", content=fs)
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    image_id = json.loads(r.text)["status"]
    assert r.content == b'{"status":"' + image_id.encode() + b'"}\r\n'
    doc = (await client.get("/images/skiffimg/imp:1/json")).json()
    assert doc["Config"]["Env"] == ["A=b"] and doc["Comment"] == "m"
    r = await client.post("/images/create?fromSrc=-&changes=RUN%20x", content=fs)
    assert (r.status_code, r.json()) == (400, {"message": "run is not a valid change command"})
    r = await client.post("/images/create?fromImage=Busybox&tag=latest")
    assert (r.status_code, r.json()) == (
        400, {"message": "invalid reference format: repository name (library/Busybox) must be lowercase"}
    )  # fmt: skip
    # Nothing to push is found before any registry is contacted: an in-stream error, as dockerd.
    r = await client.post("/images/skiffimg/nothing/push", headers={"X-Registry-Auth": "e30="})
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert r.content.splitlines()[-1] == (
        b'{"errorDetail":{"message":"An image does not exist locally with the tag: skiffimg/nothing"},'
        b'"error":"An image does not exist locally with the tag: skiffimg/nothing"}'
    )
