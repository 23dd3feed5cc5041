"""Volume routes through httpx.ASGITransport over a real VolumeService on a temp directory.

Status codes and bodies as the reference dockerd answers them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.events import EventBus
from engine.volumes.service import ANONYMOUS_LABEL, VolumeService
from engine.wiring import Services
from storage.volumes import VolumeStore

pytestmark = pytest.mark.anyio
JSON = "application/json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def users() -> dict[str, list[str]]:
    return {}


@pytest.fixture
def volumes(tmp_path: Path, users: dict[str, list[str]]) -> VolumeService:
    svc = VolumeService(VolumeStore(tmp_path / "volumes"), EventBus())
    svc.set_usage_checker(lambda name: users.get(name, []))
    return svc


@pytest.fixture
async def client(volumes: VolumeService) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        config=cast(Any, None),
        events=volumes.events,
        system=cast(Any, None),
        images=cast(Any, None),
        containers=unused("containers"),
        execs=unused("execs"),
        volumes=volumes,
        networks=unused("networks"),
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c


def _filters(**values: list[str]) -> dict[str, str]:
    return {"filters": json.dumps(values)}


async def test_create_inspect_list_remove(client: httpx.AsyncClient, tmp_path: Path) -> None:
    body = {
        "Name": "vh-b",
        "Labels": {"x": "y"},
        "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
    }
    r = await client.post("/v1.50/volumes/create", json=body)
    assert r.status_code == 201 and r.headers["content-type"] == JSON
    vol = r.json()
    assert vol["Name"] == "vh-b" and vol["Labels"] == {"x": "y"}
    assert vol["Options"] == {"device": "tmpfs", "o": "size=1m", "type": "tmpfs"}
    assert vol["Mountpoint"] == str(tmp_path / "volumes" / "vh-b" / "_data")
    # creating an existing name answers the existing volume, still 201
    again = await client.post("/volumes/create", json={"Name": "vh-b", "Labels": {"a": "b"}})
    assert again.status_code == 201 and again.json() == vol

    r = await client.get("/volumes/vh-b")
    assert r.status_code == 200 and r.json() == vol
    r = await client.get("/volumes")
    assert r.json() == {"Volumes": [vol], "Warnings": None}

    r = await client.delete("/volumes/vh-b")
    assert r.status_code == 204 and r.content == b""
    r = await client.get("/volumes/vh-b")
    assert r.status_code == 404 and r.json() == {"message": "get vh-b: no such volume"}
    assert (await client.delete("/volumes/vh-b")).status_code == 404
    r = await client.get("/volumes/a/b")
    assert r.status_code == 404 and r.json() == {"message": "get a/b: no such volume"}
    assert (await client.delete("/volumes/vh-b", params={"force": "1"})).status_code == 204


async def test_create_without_a_body_makes_an_anonymous_volume(client: httpx.AsyncClient) -> None:
    r = await client.post("/volumes/create")
    assert r.status_code == 201
    vol = r.json()
    assert len(vol["Name"]) == 64 and vol["Labels"] == {ANONYMOUS_LABEL: ""} and vol["Options"] is None


async def test_create_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/volumes/create", json={"Name": "a"})
    assert r.status_code == 400
    assert (
        r.json()["message"]
        == "create a: volume name is too short, names should be at least two alphanumeric characters"
    )
    r = await client.post("/volumes/create", json={"Name": "vv", "Driver": "foo"})
    assert r.status_code == 404
    r = await client.post("/volumes/create", json={"Name": "vv", "DriverOpts": {"foo": "x"}})
    assert r.status_code == 400 and r.json()["message"] == 'create vv: invalid option: "foo"'
    r = await client.post("/volumes/create", content=b"{bad", headers={"content-type": JSON})
    assert r.status_code == 400 and r.json()["message"].startswith("invalid JSON")
    r = await client.post("/volumes/create", content=b'{"Name":1}', headers={"content-type": JSON})
    assert r.status_code == 400
    r = await client.post("/volumes/create", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 400
    assert r.json()["message"] == "unsupported Content-Type header (text/plain): must be 'application/json'"


async def test_in_use_is_409(client: httpx.AsyncClient, users: dict[str, list[str]]) -> None:
    await client.post("/volumes/create", json={"Name": "busy"})
    users["busy"] = ["c" * 64]
    for params in ({}, {"force": "true"}):
        r = await client.delete("/volumes/busy", params=params)
        assert r.status_code == 409
        assert r.json() == {"message": f"remove busy: volume is in use - [{'c' * 64}]"}


async def test_list_filters_and_errors(client: httpx.AsyncClient, users: dict[str, list[str]]) -> None:
    await client.post("/volumes/create", json={"Name": "used", "Labels": {"app": "x"}})
    await client.post("/volumes/create", json={"Name": "free"})
    users["used"] = ["c1"]
    r = await client.get("/volumes", params=_filters(dangling=["true"]))
    assert [v["Name"] for v in r.json()["Volumes"]] == ["free"]
    # the Go map form the CLI sends
    r = await client.get("/volumes", params={"filters": json.dumps({"label": {"app=x": True}})})
    assert [v["Name"] for v in r.json()["Volumes"]] == ["used"]
    r = await client.get("/volumes", params=_filters(name=["nothing-matches"]))
    assert r.json() == {"Volumes": [], "Warnings": None}
    r = await client.get("/volumes", params=_filters(foo=["x"]))
    assert r.status_code == 400 and r.json() == {"message": "invalid filter 'foo'"}


async def test_prune_anonymous_only_from_api_1_42(client: httpx.AsyncClient) -> None:
    await client.post("/volumes/create", json={"Name": "named"})
    anon = (await client.post("/volumes/create", json={})).json()["Name"]
    r = await client.post("/v1.50/volumes/prune")
    assert r.status_code == 200 and r.json() == {"VolumesDeleted": [anon], "SpaceReclaimed": 0}
    r = await client.post("/v1.50/volumes/prune")
    assert r.json() == {"VolumesDeleted": [], "SpaceReclaimed": 0}
    # API 1.41 pruned named volumes too (dockerd adds all=true for older clients)
    r = await client.post("/v1.41/volumes/prune")
    assert r.json() == {"VolumesDeleted": ["named"], "SpaceReclaimed": 0}
    r = await client.post("/volumes/prune", params=_filters(until=["1h"]))
    assert r.status_code == 400 and r.json() == {"message": "invalid filter 'until'"}
