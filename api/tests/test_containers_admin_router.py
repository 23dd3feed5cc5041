"""Container admin routes through httpx.ASGITransport, the engine on the FakeRuntime with a real
overlay snapshotter on a temp dir (engine.tests.test_containers_admin.Harness).

Status codes, content types and bodies as the reference dockerd answers them (texts in dockerd 28's
wording where it differs from 20.10).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.containers.exec import ExecService
from engine.containers.model import Container
from engine.tests.test_containers_admin import Harness
from engine.wiring import Services

pytestmark = pytest.mark.anyio
JSON = "application/json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        config=cast(Any, None),
        events=h.bus,
        system=cast(Any, None),
        images=cast(Any, h.images),
        containers=h.service,
        execs=ExecService(h.service, h.bus),
        volumes=unused("volumes"),
        networks=unused("networks"),
    )
    app = create_app(services)
    # The harness's admin lists the test process itself as the container's processes (for top).
    app.state.containers_admin = h.admin
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c


def q(value: object) -> str:
    return urllib.parse.quote(json.dumps(value))


def message(r: httpx.Response) -> str:
    assert r.headers["content-type"] == JSON
    return cast(str, r.json()["message"])


async def test_list(client: httpx.AsyncClient, h: Harness) -> None:
    idle = await h.create("idle", Labels={"k": "v"})
    busy = await h.run("busy", Cmd=["sleep", "30", "with space"])
    r = await client.get("/containers/json")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    rows = r.json()
    assert [row["Names"] for row in rows] == [["/busy"]]
    row = rows[0]
    assert row["Id"] == busy.id and row["Image"] == "busybox" and row["ImageID"] == busy.image_id
    assert row["Command"] == "sleep 30 'with space'"
    assert row["State"] == "running" and row["Status"].startswith("Up ")
    assert isinstance(row["Created"], int)
    assert "SizeRw" not in row and "SizeRootFs" not in row
    r = await client.get("/v1.41/containers/json?all=1&size=1")
    rows = r.json()
    assert [row["Id"] for row in rows] == [busy.id, idle.id]
    assert "SizeRw" not in rows[1]  # zero: omitted in the list shape
    assert rows[1]["SizeRootFs"] == h.layers.size(h.chain)
    assert rows[1]["State"] == "created" and rows[1]["Status"] == "Created"
    # both filter shapes
    for filters in ({"label": {"k=v": True}}, {"label": ["k=v"]}, {"status": ["created"]}):
        r = await client.get(f"/containers/json?all=1&filters={q(filters)}")
        assert [row["Id"] for row in r.json()] == [idle.id], filters
    r = await client.get("/containers/json?limit=1&all=0")
    assert [row["Id"] for row in r.json()] == [busy.id]


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        (f"filters={q({'foo': ['x']})}", 400, "invalid filter 'foo'"),
        (f"filters={q({'status': ['foo']})}", 400, "invalid filter 'status=foo'"),
        (f"filters={q({'exited': ['x']})}", 500, 'strconv.Atoi: parsing "x": invalid syntax'),
        (f"filters={q({'before': ['nope']})}", 500, "no such container nope"),
        ("limit=abc", 500, 'strconv.Atoi: parsing "abc": invalid syntax'),
        ("filters=%7Bbad", 400, None),
    ],
)
async def test_list_errors(client: httpx.AsyncClient, query: str, status: int, text: str | None) -> None:
    r = await client.get(f"/containers/json?{query}")
    assert r.status_code == status
    if text is not None:
        assert message(r) == text


async def test_inspect(client: httpx.AsyncClient, h: Harness) -> None:
    c = await h.create("idle")
    r = await client.get("/containers/idle/json")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    doc = r.json()
    assert doc["Id"] == c.id and doc["Name"] == "/idle" and doc["Image"] == c.image_id
    assert doc["State"]["Status"] == "created" and doc["ExecIDs"] is None
    assert doc["GraphDriver"]["Name"] == "overlay2"
    assert "SizeRw" not in doc
    r = await client.get(f"/containers/{c.id[:7]}/json?size=1")
    keys = list(r.json())
    assert keys[keys.index("GraphDriver") + 1 : keys.index("GraphDriver") + 4] == [
        "SizeRw",
        "SizeRootFs",
        "Mounts",
    ]
    assert r.json()["SizeRw"] == 0
    r = await client.get("/containers/nope/json")
    assert r.status_code == 404 and message(r) == "No such container: nope"


async def test_rename(client: httpx.AsyncClient, h: Harness) -> None:
    c = await h.create("idle")
    other = await h.create("other")
    r = await client.post("/containers/idle/rename?name=fresh")
    assert r.status_code == 204 and r.content == b""
    assert c.name == "/fresh"
    r = await client.post("/containers/fresh/rename?name=fresh")
    assert r.status_code == 400
    assert message(r) == "Renaming a container with the same name as its current name"
    r = await client.post("/containers/fresh/rename?name=other")
    assert r.status_code == 409
    expected = 'Error when allocating new name: Conflict. The container name "/other" is already in use'
    assert message(r).startswith(f'{expected} by container "{other.id}".')
    r = await client.post("/containers/fresh/rename")
    assert r.status_code == 400 and message(r) == "Neither old nor new names may be empty"
    r = await client.post("/containers/nope/rename?name=x1")
    assert r.status_code == 404


async def test_pause_unpause(client: httpx.AsyncClient, h: Harness) -> None:
    idle = await h.create("idle")
    busy = await h.run("busy")
    assert (await client.post("/containers/busy/pause")).status_code == 204
    r = await client.get("/containers/json")
    assert r.json()[0]["State"] == "paused" and r.json()[0]["Status"].endswith("(Paused)")
    r = await client.post("/containers/busy/pause")
    assert r.status_code == 409 and message(r) == f"Container {busy.id} is already paused"
    assert (await client.post("/containers/busy/unpause")).status_code == 204
    r = await client.post("/containers/busy/unpause")
    assert r.status_code == 500 and message(r) == f"Container {busy.id} is not paused"
    r = await client.post("/containers/idle/pause")
    assert r.status_code == 409 and message(r) == f"container {idle.id} is not running"


async def test_update(client: httpx.AsyncClient, h: Harness) -> None:
    c = await h.create("idle")
    body = {"Memory": 64 << 20, "MemorySwap": 128 << 20}
    r = await client.post("/containers/idle/update", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert r.json() == {"Warnings": None}
    assert c.host_config["Memory"] == 64 << 20
    r = await client.post("/containers/idle/update", content=b"")
    assert r.status_code == 200
    r = await client.post("/containers/idle/update", json={"Memory": 1000})
    assert r.status_code == 400 and message(r) == "Minimum memory limit allowed is 6MB"
    r = await client.post("/containers/idle/update", content=b"{bad", headers={"Content-Type": JSON})
    assert r.status_code == 400 and message(r).startswith("invalid JSON: ")
    r = await client.post(
        "/containers/idle/update",
        content=b"Memory=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    assert (
        message(r)
        == "unsupported Content-Type header (application/x-www-form-urlencoded): must be 'application/json'"
    )
    r = await client.post("/containers/idle/update", json=[1])
    assert r.status_code == 400
    r = await client.post("/containers/nope/update", json=body)
    assert r.status_code == 404


async def test_top(client: httpx.AsyncClient, h: Harness) -> None:
    idle = await h.create("idle")
    await h.run("busy")
    r = await client.get("/containers/busy/top?ps_args=-o%20pid,comm")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    assert list(r.json()) == ["Processes", "Titles"]
    assert r.json()["Titles"] == ["PID", "COMMAND"]
    assert r.json()["Processes"][0][0] == str(os.getpid())
    r = await client.get("/containers/idle/top")
    assert r.status_code == 409 and message(r) == f"container {idle.id} is not running"


async def test_prune_and_changes(client: httpx.AsyncClient, h: Harness) -> None:
    c = await h.create("idle")
    r = await client.get("/containers/idle/changes")
    assert r.status_code == 200 and r.content == b"null\n"
    (h.upper(c) / "added").write_bytes(b"abc")
    r = await client.get("/containers/idle/changes")
    assert r.json() == [{"Path": "/added", "Kind": 1}]
    r = await client.post(f"/containers/prune?filters={q({'label': ['none']})}")
    assert r.status_code == 200 and r.json() == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    r = await client.post(f"/containers/prune?filters={q({'bogus': ['1']})}")
    assert r.status_code == 400 and message(r) == "invalid filter 'bogus'"
    r = await client.post("/containers/prune")
    assert r.json() == {"ContainersDeleted": [c.id], "SpaceReclaimed": 3}
    r = await client.get("/containers/idle/changes")
    assert r.status_code == 404


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
async def test_export(client: httpx.AsyncClient, h: Harness) -> None:
    c: Container = await h.create("idle")
    (h.upper(c) / "added").write_bytes(b"abc")
    r = await client.get("/containers/idle/export")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert {"added", "bin/sh", "etc/passwd"} <= set(tar.getnames())
    r = await client.get("/containers/nope/export")
    assert r.status_code == 404 and message(r) == "No such container: nope"
