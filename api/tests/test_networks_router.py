"""Network routes through httpx.ASGITransport over a real NetworkService with FakeDrivers.

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
from engine.networks.service import NetworkService
from engine.networks.store import NetworkStore
from engine.wiring import Services
from network.fake import FakeDriver
from network.ipam import Ipam

pytestmark = pytest.mark.anyio
PREDEFINED = {"bridge": "1" * 64, "host": "2" * 64, "none": "3" * 64}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def networks(tmp_path: Path) -> NetworkService:
    drivers = {"bridge": FakeDriver(), "host": FakeDriver("host"), "null": FakeDriver("null")}
    svc = NetworkService(
        NetworkStore(tmp_path / "networks"), drivers, Ipam(), EventBus(), predefined_ids=PREDEFINED
    )
    await svc.start()
    return svc


@pytest.fixture
async def client(networks: NetworkService) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        config=cast(Any, None),
        events=networks.events,
        system=cast(Any, None),
        images=cast(Any, None),
        containers=unused("containers"),
        execs=unused("execs"),
        volumes=unused("volumes"),
        networks=networks,
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c


async def test_list_and_alias(client: httpx.AsyncClient) -> None:
    for path in ("/networks", "/networks/", "/v1.41/networks"):
        res = await client.get(path)
        assert res.status_code == 200, path
        assert sorted(n["Name"] for n in res.json()) == ["bridge", "host", "none"]
    res = await client.get("/networks", params={"filters": json.dumps({"name": {"none": True}})})
    assert [n["Name"] for n in res.json()] == ["none"]
    res = await client.get("/networks", params={"filters": json.dumps({"nope": ["x"]})})
    assert res.status_code == 400 and res.json() == {"message": "invalid filter 'nope'"}


async def test_create_inspect_remove(client: httpx.AsyncClient) -> None:
    body = {
        "Name": "app_default",
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Labels": {"com.docker.compose.project": "app"},
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.33.0.0/24", "Gateway": "10.33.0.1"}]},
        "Options": {"com.docker.network.driver.mtu": "1400"},
    }
    res = await client.post("/networks/create", json=body)
    assert res.status_code == 201, res.text
    created = res.json()
    assert set(created) == {"Id", "Warning"} and created["Warning"] == ""
    nid = created["Id"]

    res = await client.post("/networks/create", json=body)
    assert res.status_code == 409
    assert res.json() == {"message": "network with name app_default already exists"}

    view = (await client.get("/networks/app_default")).json()
    assert view["Id"] == nid and view["Driver"] == "bridge" and view["Containers"] == {}
    assert view["IPAM"]["Config"] == [{"Subnet": "10.33.0.0/24", "Gateway": "10.33.0.1"}]
    assert view["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert (await client.get(f"/networks/{nid[:7]}")).json()["Name"] == "app_default"

    res = await client.get("/networks/missing")
    assert res.status_code == 404 and res.json() == {"message": "network missing not found"}
    res = await client.delete("/networks/bridge")
    assert res.status_code == 403
    assert res.json() == {"message": "bridge is a pre-defined network and cannot be removed"}

    res = await client.delete(f"/networks/{nid}")
    assert res.status_code == 204 and res.content == b""
    assert (await client.get(f"/networks/{nid}")).status_code == 404


async def test_create_bad_bodies(client: httpx.AsyncClient) -> None:
    res = await client.post("/networks/create", json={"Name": "x", "Internal": "yes"})
    assert res.status_code == 400 and "CreateRequest.Internal" in res.json()["message"]
    res = await client.post("/networks/create", content=b"[1]")
    assert res.status_code == 400
    res = await client.post("/networks/create", json={"Name": "x", "Driver": "host"})
    assert res.status_code == 403
    assert res.json() == {"message": 'only one instance of "host" network is allowed'}


async def test_prune(client: httpx.AsyncClient) -> None:
    for name in ("p1", "p2"):
        assert (await client.post("/networks/create", json={"Name": name})).status_code == 201
    res = await client.post("/networks/prune", params={"filters": json.dumps({"label": ["none"]})})
    assert res.json() == {"NetworksDeleted": None}
    res = await client.post("/networks/prune")
    assert res.status_code == 200 and sorted(res.json()["NetworksDeleted"]) == ["p1", "p2"]


async def test_connect_needs_a_container(client: httpx.AsyncClient) -> None:
    res = await client.post("/networks/bridge/connect", json={})
    assert res.status_code == 400
    res = await client.post("/networks/missing/disconnect", json={"Container": "x"})
    assert res.status_code == 404 and res.json() == {"message": "network missing not found"}
