"""``GET /containers/{name}/stats`` through httpx.ASGITransport: query parsing (``stream`` default,
``one-shot`` only from API 1.41), status codes and headers. Containers come from the admin harness
(FakeRuntime); the sampler reads a fake cgroup v1 tree and /proc.
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
from engine.containers.model import Container
from engine.containers.stats import Sampler, StatsService
from engine.tests.test_containers_admin import Harness
from engine.wiring import Services
from runtime.cgroups import CgroupLayout, cgroups_path

pytestmark = pytest.mark.anyio
ZERO_TIME = "0001-01-01T00:00:00Z"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path / "engine")
    try:
        yield harness
    finally:
        await harness.close()


def fake_cgroup(base: Path, c: Container) -> None:
    cg = cgroups_path(c.id).lstrip("/")
    files = {
        f"cpuacct/{cg}/cpuacct.usage": "1000\n",
        f"cpuacct/{cg}/cpuacct.stat": "user 1\nsystem 0\n",
        f"memory/{cg}/memory.usage_in_bytes": "4096\n",
        f"memory/{cg}/memory.limit_in_bytes": "1048576\n",
        f"pids/{cg}/pids.current": "1\n",
        "proc/stat": "cpu  100 0 0 0 0 0 0 0 0 0\ncpu0 100 0 0 0 0 0 0 0 0 0\n",
    }
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
async def client(h: Harness, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    services = Services(
        config=cast(Any, None),
        events=h.bus,
        system=cast(Any, None),
        images=cast(Any, None),
        containers=h.service,
        execs=ExecService(h.service, h.bus),
        volumes=unused("volumes"),
        networks=unused("networks"),
    )
    app = create_app(services)
    layout = CgroupLayout(v1={k: tmp_path / k for k in ("cpu", "cpuacct", "memory", "pids", "blkio")})
    sampler = Sampler(layout=layout, proc=tmp_path / "proc", machine_memory=8 << 30)
    app.state.stats_service = StatsService(h.service, sampler, interval=0.01)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://skiff") as c:
        yield c


async def test_single_answers_and_one_shot_by_version(
    client: httpx.AsyncClient, h: Harness, tmp_path: Path
) -> None:
    c = await h.run("web")
    fake_cgroup(tmp_path, c)
    r = await client.get("/v1.50/containers/web/stats", params={"stream": "false"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.text.endswith("}\n") and r.text.count("\n") == 1
    body = r.json()
    assert body["name"] == "/web" and body["id"] == c.id and body["preread"] != ZERO_TIME
    assert body["memory_stats"]["limit"] == 1048576 and body["pids_stats"] == {"current": 1}
    r = await client.get("/v1.50/containers/web/stats", params={"stream": "0", "one-shot": "1"})
    assert r.json()["preread"] == ZERO_TIME
    # one-shot arrived in API 1.41: before, it is not read and the answer is primed.
    r = await client.get("/v1.40/containers/web/stats", params={"stream": "0", "one-shot": "1"})
    assert r.json()["preread"] != ZERO_TIME


async def test_errors(client: httpx.AsyncClient, h: Harness) -> None:
    await h.create("idle")
    r = await client.get("/v1.50/containers/idle/stats", params={"one-shot": "true"})
    assert (r.status_code, r.json()) == (400, {"message": "cannot have stream=true and one-shot=true"})
    r = await client.get("/v1.50/containers/nope/stats", params={"stream": "0"})
    assert (r.status_code, r.json()) == (404, {"message": "No such container: nope"})
    r = await client.get("/v1.50/containers/idle/stats", params={"stream": "no"})
    assert r.status_code == 200 and r.json()["read"] == ZERO_TIME and r.json()["memory_stats"] == {}
