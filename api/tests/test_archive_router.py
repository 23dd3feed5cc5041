"""The archive routes through httpx.ASGITransport: parameters, statuses, the stat header, bodies.

The container root is a plain directory (engine.tests.test_archive's stub), so no root is needed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from api.app import create_app
from api.tests.fakes import unused
from engine.containers.archive import ContainerArchive
from engine.tests.test_archive import StubContainers, container
from engine.wiring import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("hi\n")
    (root / "d" / "clash").mkdir()
    return root


@pytest.fixture
async def client(
    tmp_path: Path, rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, StubContainers]]:
    stub = StubContainers(tmp_path, container())
    monkeypatch.setattr(
        ContainerArchive, "_open_root", lambda self, c, write: os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    )
    services = Services(
        config=cast(Any, None),
        events=cast(Any, None),
        system=cast(Any, None),
        images=cast(Any, None),
        containers=cast(Any, stub),
        execs=unused("execs"),
        volumes=unused("volumes"),
        networks=unused("networks"),
    )
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://skiff") as c:
        yield c, stub


def stat_of(r: httpx.Response) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(base64.b64decode(r.headers["X-Docker-Container-Path-Stat"])))


def tar_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo(name)
        info.size, info.uid, info.gid = len(data), os.getuid(), os.getgid()
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def test_head(client: tuple[httpx.AsyncClient, StubContainers]) -> None:
    c, _ = client
    r = await c.head("/v1.41/containers/box/archive", params={"path": "/d/f"})
    assert r.status_code == 200 and r.content == b""
    assert stat_of(r) == {**stat_of(r), "name": "f", "size": 3, "mode": 0o644, "linkTarget": ""}
    r = await c.head("/containers/box/archive", params={"path": "/nope"})
    assert r.status_code == 404
    r = await c.head("/containers/other/archive", params={"path": "/"})
    assert r.status_code == 404


@pytest.mark.parametrize("method", ["HEAD", "GET", "PUT"])
async def test_path_is_required(client: tuple[httpx.AsyncClient, StubContainers], method: str) -> None:
    c, _ = client
    r = await c.request(method, "/containers/box/archive", params={"path": ""})
    assert r.status_code == 400
    if method != "HEAD":
        assert r.json() == {"message": "bad parameter: pathcannot be empty"}


async def test_get(client: tuple[httpx.AsyncClient, StubContainers]) -> None:
    c, stub = client
    r = await c.get("/containers/box/archive", params={"path": "/d"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert stat_of(r)["name"] == "d" and stat_of(r)["mode"] & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tf:
        assert tf.getnames() == ["d", "d/clash", "d/f"]
    r = await c.get("/containers/box/archive", params={"path": "/nope"})
    assert r.status_code == 404
    assert r.json() == {"message": "Could not find the file /nope in container box"}
    assert stub.published == ["archive-path"]


async def test_put(client: tuple[httpx.AsyncClient, StubContainers], rootfs: Path) -> None:
    c, stub = client
    r = await c.put("/containers/box/archive", params={"path": "/d"}, content=tar_of("new", b"new"))
    assert r.status_code == 200 and r.content == b""
    assert (rootfs / "d" / "new").read_bytes() == b"new"
    params = {"path": "/d", "noOverwriteDirNonDir": "true"}
    r = await c.put("/containers/box/archive", params=params, content=tar_of("clash", b"x"))
    assert r.status_code == 500
    assert r.json() == {"message": 'cannot overwrite directory "/d/clash" with non-directory "/d"'}
    params["noOverwriteDirNonDir"] = "0"
    r = await c.put("/containers/box/archive", params=params, content=tar_of("clash", b"x"))
    assert r.status_code == 200 and (rootfs / "d" / "clash").read_bytes() == b"x"
    r = await c.put("/containers/box/archive", params={"path": "/d/f"}, content=tar_of("x", b"x"))
    assert r.status_code == 400 and r.json() == {"message": "extraction point is not a directory"}
    assert stub.published == ["extract-to-dir", "extract-to-dir"]
