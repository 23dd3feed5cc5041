"""Pull through ImageService against the in-memory registry: the message stream, references, index
selection, refusals before the stream, verification, shared downloads, and clean failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import errdefs
from engine.images.endpoints import RegistryOptions
from engine.images.platform import host
from engine.images.regauth import AuthConfig
from engine.images.service import ImageService
from storage.content import ContentStore
from storage.images import ImageStore
from storage.layers import LayerStore
from storage.snapshots import OverlaySnapshotter

from .conftest import Recorder
from .fakeregistry import MT_OCI_INDEX, FakeRegistry, Image, make_image

PROGRESS = ("Downloading", "Extracting", "Retrying in")


@dataclass
class Env:
    root: Path
    registry: FakeRegistry
    events: Recorder
    content: ContentStore
    layers: LayerStore
    service: ImageService
    hosts: list[str]

    def snapshots(self) -> list[str]:
        return sorted(info.name for info in self.layers.snapshotter.walk())


def make_env(root: Path, registry: FakeRegistry, options: RegistryOptions | None = None) -> Env:
    hosts: list[str] = []
    inner = registry.transport()

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return await inner.handle_async_request(request)

    content = ContentStore(root / "content")
    layers = LayerStore(content, OverlaySnapshotter(root / "overlay"))
    events = Recorder()
    service = ImageService(
        ImageStore(root / "image", content), layers, content, events,  # type: ignore[arg-type]
        registry=options, registry_transport=httpx.MockTransport(handler),
    )  # fmt: skip
    service._remote.dist.max_attempts = 2
    service._remote.dist.retry_unit = 0.0
    return Env(root, registry, events, content, layers, service, hosts)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path, FakeRegistry())


def run(env: Env, fn: Callable[[], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        try:
            return await fn()
        finally:
            await env.service.aclose()

    return asyncio.run(go())


async def collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m async for m in stream]


async def pull(
    env: Env, image: str, tag: str = "", platform: str = "", auth: AuthConfig | None = None
) -> list[dict[str, Any]]:
    return await collect(await env.service.pull(image, tag, platform, auth))


def statuses(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (m.get("status") or "error:" + m.get("error", ""), m.get("id", ""))
        for m in messages
        if not str(m.get("status", "")).startswith(PROGRESS)
    ]


def short(digest: str) -> str:
    return digest[7:19]


BASE = {"bin/hello": b"hello\n"}
APP = {"app/run": b"run\n"}


def test_pull_by_tag_stream_refs_and_events(env: Env) -> None:
    image = make_image([BASE, APP], Labels={"team": "a"})
    env.registry.put_image("team/app", "v1", image)
    l0, l1 = (short(sha) for sha in [_digest(b) for b in image.layers])

    async def go() -> None:
        first = await pull(env, "reg.test/team/app", "v1")
        got = statuses(first)
        assert got[:3] == [
            ("Pulling from team/app", "v1"),
            ("Pulling fs layer", l0),
            ("Pulling fs layer", l1),
        ]
        assert got[-2:] == [
            (f"Digest: {image.digest}", ""),
            ("Status: Downloaded newer image for reg.test/team/app:v1", ""),
        ]
        for layer in (l0, l1):  # downloads interleave; per layer the order is fixed
            assert [s for s, i in got if i == layer] == [
                "Pulling fs layer", "Verifying Checksum", "Download complete", "Pull complete"
            ]  # fmt: skip
        assert got.index(("Pull complete", l0)) < got.index(("Pull complete", l1))
        downloading = [m for m in first if m.get("status") == "Downloading" and m["id"] == l0]
        assert downloading[-1]["progressDetail"] == {
            "current": len(image.layers[0]),
            "total": len(image.layers[0]),
        }
        doc = await env.service.inspect("reg.test/team/app:v1")
        assert doc["Id"] == image.id
        assert doc["RepoTags"] == ["reg.test/team/app:v1"]
        assert doc["RepoDigests"] == [f"reg.test/team/app@{image.digest}"]
        assert env.events.events[-1] == (
            "image",
            "pull",
            "reg.test/team/app:v1",
            {"team": "a", "name": "reg.test/team/app:v1"},
        )

        again = await pull(env, "reg.test/team/app", "v1")
        assert statuses(again) == [
            ("Pulling from team/app", "v1"),
            (f"Digest: {image.digest}", ""),
            ("Status: Image is up to date for reg.test/team/app:v1", ""),
        ]
        by_digest = await pull(env, "reg.test/team/app", image.digest)
        assert statuses(by_digest) == [
            ("Pulling from team/app", f"reg.test/team/app@{image.digest}"),
            (f"Digest: {image.digest}", ""),
            (f"Status: Image is up to date for reg.test/team/app@{image.digest}", ""),
        ]

    run(env, go)


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_already_present_layers_and_all_tags(env: Env) -> None:
    a = make_image([BASE])
    b = make_image([BASE, APP])
    env.registry.put_image("team/app", "a", a)
    env.registry.put_image("team/app", "b", b)

    async def go() -> None:
        await pull(env, "reg.test/team/app", "a")
        got = statuses(await pull(env, "reg.test/team/app", "b"))
        assert got[:3] == [
            ("Pulling from team/app", "b"),
            ("Already exists", short(_digest(b.layers[0]))),
            ("Pulling fs layer", short(_digest(b.layers[1]))),
        ]
        assert env.registry.count("GET", _digest(b.layers[0])) == 1
        # No tag at all: every tag of the repository (docker pull -a).
        everything = statuses(await pull(env, "reg.test/team/app"))
        assert [s for s, _ in everything if s.startswith("Pulling from")] == ["Pulling from team/app"] * 2
        assert everything[-1] == ("Status: Image is up to date for reg.test/team/app", "")

    run(env, go)


def test_index_selects_the_platform(env: Env) -> None:
    arch = host().architecture
    other = "arm64" if arch != "arm64" else "amd64"
    native = make_image([{"native": arch.encode()}], arch=arch)
    foreign = make_image([{"foreign": other.encode()}], arch=other)
    env.registry.put_image("multi/app", None, native)
    env.registry.put_image("multi/app", None, foreign)
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": img.digest,
             "size": len(img.manifest), "platform": {"os": "linux", "architecture": a}}
            for img, a in ((foreign, other), (native, arch))
        ],
    }).encode()  # fmt: skip
    index_digest = env.registry.put_manifest("multi/app", "latest", MT_OCI_INDEX, index)

    async def go() -> None:
        got = await pull(env, "reg.test/multi/app", "latest")
        assert {"status": f"Digest: {index_digest}"} in got
        assert (await env.service.inspect("reg.test/multi/app"))["Id"] == native.id
        assert (await env.service.inspect("reg.test/multi/app"))["RepoDigests"] == [
            f"reg.test/multi/app@{index_digest}"
        ]
        await pull(env, "reg.test/multi/app", "latest", f"linux/{other}")
        assert (await env.service.inspect("reg.test/multi/app"))["Id"] == foreign.id
        failed = await pull(env, "reg.test/multi/app", "latest", "linux/s390x")
        assert failed[0] == {"status": "Pulling from multi/app", "id": "latest"}
        assert failed[-1] == {
            "errorDetail": {"message": "no matching manifest for linux/s390x in the manifest list entries"},
            "error": "no matching manifest for linux/s390x in the manifest list entries",
        }

    run(env, go)


def test_refusals_before_the_stream(env: Env) -> None:
    env.registry.put_manifest("old/app", "v1", "application/vnd.docker.distribution.manifest.v1+prettyjws",
                              b'{"schemaVersion":1,"name":"old/app"}')  # fmt: skip

    async def go() -> None:
        with pytest.raises(
            errdefs.NotFound,
            match=r"^manifest for reg.test/team/app:nope not found: manifest unknown: manifest unknown$",
        ):
            await env.service.pull("reg.test/team/app", "nope")
        with pytest.raises(
            errdefs.InvalidParameter,
            match=r"schema 1 support has been removed. Suggest the author of reg.test/old/app:v1",
        ):
            await env.service.pull("reg.test/old/app", "v1")
        with pytest.raises(errdefs.InvalidParameter, match=r"must be lowercase"):
            await env.service.pull("reg.test/Team/app", "v1")
        with pytest.raises(errdefs.InvalidParameter, match=r"invalid tag format"):
            await env.service.pull("reg.test/team/app", "bad tag")
        with pytest.raises(errdefs.Forbidden, match=r"'scratch' is a reserved name"):
            await env.service.pull("scratch", "latest")

    run(env, go)


def test_bearer_denied_and_private_pull_with_credentials(tmp_path: Path) -> None:
    env = make_env(tmp_path, FakeRegistry(auth="bearer"))
    image = make_image([BASE])
    env.registry.put_image("team/app", "v1", image)

    async def go() -> None:
        with pytest.raises(errdefs.NotFound) as info:
            await env.service.pull("reg.test/team/app", "v1")
        assert info.value.message == (
            "pull access denied for reg.test/team/app, repository does not exist or may require "
            "'docker login': denied: requested access to the resource is denied"
        )
        got = await pull(env, "reg.test/team/app", "v1", auth=AuthConfig(username="alice", password="secret"))
        assert got[-1]["status"] == "Status: Downloaded newer image for reg.test/team/app:v1"

    run(env, go)


def test_corrupt_blob_is_refused_and_leaves_nothing(env: Env) -> None:
    image = make_image([BASE, APP])
    env.registry.put_image("team/app", "v1", image)
    bad = _digest(image.layers[1])
    env.registry.corrupt.add(bad)

    async def go() -> None:
        got = await pull(env, "reg.test/team/app", "v1")
        assert got[-1]["error"] == f"filesystem layer verification failed for digest {bad}"
        assert await env.service.list_images() == []
        assert env.snapshots() == []
        assert not env.content.has(bad)
        # A sibling download cancelled by the failure aborts its ingest as its task unwinds,
        # which may finish just after the error message went out.
        ingest = env.root / "content" / "ingest"
        for _ in range(200):
            if not list(ingest.iterdir()):
                break
            await asyncio.sleep(0.01)
        assert list(ingest.iterdir()) == []

    run(env, go)


def test_failure_part_way_then_retry_resumes(env: Env) -> None:
    image = make_image([BASE, APP, {"c": b"c"}])
    env.registry.put_image("team/app", "v1", image)
    d0, d1, _ = (_digest(b) for b in image.layers)
    env.registry.broken.add(d1)

    async def go() -> None:
        # The broken layer fails only once the first one is stored (a failure cancels the rest).
        gate = env.registry.holds[d1] = asyncio.Event()

        async def open_gate() -> None:
            while not env.content.has(d0):
                await asyncio.sleep(0.01)
            gate.set()

        opener = asyncio.create_task(open_gate())
        got = await pull(env, "reg.test/team/app", "v1")
        await opener
        del env.registry.holds[d1]
        assert got[-1]["error"] == "received unexpected HTTP status: 500 Internal Server Error"
        assert {"status": "Retrying in 5 seconds", "progressDetail": {}, "id": short(d1)} in got
        assert await env.service.list_images() == [] and env.snapshots() == []
        assert env.content.has(d0)  # verified and kept for the next attempt
        env.registry.broken.clear()
        got = await pull(env, "reg.test/team/app", "v1")
        assert got[-1]["status"] == "Status: Downloaded newer image for reg.test/team/app:v1"
        assert env.registry.count("GET", d0) == 1
        assert (await env.service.inspect("reg.test/team/app:v1"))["Id"] == image.id

    run(env, go)


def test_concurrent_pulls_download_a_shared_layer_once(env: Env) -> None:
    a = make_image([BASE, {"a": b"a"}])
    b = make_image([BASE, {"b": b"b"}])
    env.registry.put_image("team/a", "v1", a)
    env.registry.put_image("team/b", "v1", b)
    env.registry.put_blob("team/b", a.layers[0])
    shared = _digest(a.layers[0])

    async def go() -> None:
        hold = env.registry.holds[shared] = asyncio.Event()
        first = asyncio.create_task(pull(env, "reg.test/team/a", "v1"))
        second = asyncio.create_task(pull(env, "reg.test/team/b", "v1"))
        active = env.service._remote.downloads._active
        for _ in range(1000):  # until both pulls watch the one transfer of the shared blob
            if shared in active and len(active[shared].watchers) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(active[shared].watchers) == 2
        hold.set()
        got_a, got_b = await asyncio.gather(first, second)
        assert got_a[-1]["status"].startswith("Status: Downloaded newer image")
        assert got_b[-1]["status"].startswith("Status: Downloaded newer image")
        assert env.registry.count("GET", shared) == 1
        # The second pull watched the first one's download: it saw it complete.
        assert ("Download complete", short(shared)) in statuses(got_b)

    run(env, go)


def test_disconnected_client_cancels_and_unwinds(env: Env) -> None:
    image = make_image([BASE, APP])
    env.registry.put_image("team/app", "v1", image)
    held = _digest(image.layers[1])

    async def go() -> None:
        env.registry.holds[held] = asyncio.Event()
        stream = await env.service.pull("reg.test/team/app", "v1")
        seen = []
        async for message in stream:
            seen.append(message)
            if message.get("status") == "Pull complete":
                break
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(200):
            if not env.service._remote._tasks:
                break
            await asyncio.sleep(0.01)
        assert not env.service._remote._tasks
        assert env.snapshots() == [] and await env.service.list_images() == []

    run(env, go)


def test_mirror_serves_docker_hub_pulls(tmp_path: Path) -> None:
    env = make_env(tmp_path, FakeRegistry(), RegistryOptions(mirrors=("https://mirror.test",)))
    image = make_image([BASE])
    env.registry.put_image("library/busybox", "latest", image)

    async def go() -> None:
        got = await pull(env, "busybox", "latest")
        assert statuses(got)[0] == ("Pulling from library/busybox", "latest")
        assert got[-1]["status"] == "Status: Downloaded newer image for busybox:latest"
        assert set(env.hosts) == {"mirror.test"}
        assert (await env.service.inspect("busybox"))["RepoDigests"] == [f"busybox@{image.digest}"]

    run(env, go)


def test_images_from_the_registry_can_be_saved(env: Env) -> None:
    image: Image = make_image([BASE, APP])
    env.registry.put_image("team/app", "v1", image)

    async def go() -> bytes:
        await pull(env, "reg.test/team/app", "v1")
        return b"".join([c async for c in await env.service.export(["reg.test/team/app:v1"])])

    saved = run(env, go)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        names = set(tar.getnames())
    config = json.loads(image.config)
    for diff_id in config["rootfs"]["diff_ids"]:
        assert f"blobs/sha256/{diff_id[7:]}" in names
