"""Push through ImageService against the in-memory registry: the stream, existing layers, mounts,
monolithic / chunked / compressed uploads, the manifest, RepoDigests, and in-stream refusals."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.images import push as push_module
from engine.images.regauth import AuthConfig

from .fakeregistry import MT_MANIFEST, FakeRegistry, make_image
from .imagetars import ArchiveImage, docker_archive, layer_tar, sha
from .test_registry_pull import BASE, Env, collect, make_env, pull, run, short, statuses


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path, FakeRegistry())


async def push(env: Env, name: str, tag: str = "", auth: AuthConfig | None = None) -> list[dict[str, Any]]:
    return await collect(await env.service.push(name, tag, auth))


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def load(env: Env, image: ArchiveImage) -> None:
    messages = [m async for m in await env.service.load(_chunks(docker_archive([image])))]
    assert "error" not in messages[-1], messages


def test_push_pulled_image_exists_mounts_and_same_digest(env: Env) -> None:
    image = make_image([BASE, {"app": b"app"}])
    env.registry.put_image("team/app", "v1", image)
    diff_ids = json.loads(image.config)["rootfs"]["diff_ids"]
    top, bottom = short(diff_ids[1]), short(diff_ids[0])

    async def go() -> None:
        await pull(env, "reg.test/team/app", "v1")
        got = await push(env, "reg.test/team/app", "v1")
        assert got[0] == {"status": "The push refers to repository [reg.test/team/app]"}
        assert statuses(got)[1:3] == [("Preparing", top), ("Preparing", bottom)]
        assert sorted(statuses(got)[3:5]) == sorted(
            [("Layer already exists", top), ("Layer already exists", bottom)]
        )
        assert got[-2] == {"status": f"v1: digest: {image.digest} size: {len(image.manifest)}"}
        assert got[-1] == {
            "progressDetail": {},
            "aux": {"Tag": "v1", "Digest": image.digest, "Size": len(image.manifest)},
        }

        await env.service.tag("reg.test/team/app:v1", "reg.test/other/app", "v2")
        got = await push(env, "reg.test/other/app", "v2")
        assert sorted(statuses(got)[3:5]) == sorted(
            [("Mounted from team/app", top), ("Mounted from team/app", bottom)]
        )
        assert env.registry.manifests["other/app"]["v2"] == (MT_MANIFEST, image.manifest)
        doc = await env.service.inspect("reg.test/other/app:v2")
        assert doc["RepoDigests"] == [
            f"reg.test/other/app@{image.digest}",
            f"reg.test/team/app@{image.digest}",
        ]
        assert [e[1:3] for e in env.events.events if e[1] == "push"] == [
            ("push", "reg.test/team/app:v1"),
            ("push", "reg.test/other/app:v2"),
        ]

    run(env, go)


def test_push_loaded_image_compresses_on_the_fly_and_round_trips(env: Env, tmp_path: Path) -> None:
    l1 = layer_tar({"hello.txt": b"hello\n"})
    l2 = layer_tar({"big.bin": os.urandom(200_000)})
    loaded = ArchiveImage(["reg.test/team/loaded:1"], [l1, l2])

    async def go() -> None:
        await load(env, loaded)
        got = await push(env, "reg.test/team/loaded", "1")
        assert got[-1]["aux"]["Tag"] == "1", got
        pushed = [s for s in statuses(got) if s[0] == "Pushed"]
        assert sorted(pushed) == sorted([("Pushed", short(sha(l1))), ("Pushed", short(sha(l2)))])
        pushing = [m for m in got if m.get("status") == "Pushing"]
        assert pushing and pushing[-1]["progressDetail"]["total"] in (len(l1), len(l2))
        assert env.registry.patches and all(p == "" for p in env.registry.patches)  # streamed, one PATCH each
        manifest = json.loads(env.registry.manifests["team/loaded"]["1"][1])
        assert manifest["mediaType"] == MT_MANIFEST
        blobs = env.registry.blobs["team/loaded"]
        layers = [gzip.decompress(blobs[x["digest"]]) for x in manifest["layers"]]
        assert layers == [l1, l2]
        assert manifest["config"]["digest"] == loaded.id
        # The same layers again: the compressed digests are remembered, so HEAD finds them.
        again = await push(env, "reg.test/team/loaded", "1")
        assert [s for s, _ in statuses(again)].count("Layer already exists") == 2

    run(env, go)

    # A daemon that never had the image pulls it back to the same ID.
    fresh = make_env(tmp_path / "fresh", env.registry)

    async def back() -> None:
        got = await pull(fresh, "reg.test/team/loaded", "1")
        assert got[-1]["status"] == "Status: Downloaded newer image for reg.test/team/loaded:1"
        assert (await fresh.service.inspect("reg.test/team/loaded:1"))["Id"] == loaded.id

    run(fresh, back)


def test_monolithic_and_chunked_uploads(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "MONOLITHIC_MAX", 4096)
    monkeypatch.setattr(push_module, "CHUNK", 64 * 1024)
    small = make_image([{"s": b"s"}])
    big_layer = {"big.bin": os.urandom(150_000)}
    big = make_image([big_layer])
    env.registry.put_image("src/small", "1", small)
    env.registry.put_image("src/big", "1", big)

    async def go() -> None:
        await pull(env, "reg.test/src/small", "1")
        await pull(env, "reg.test/src/big", "1")
        # Another registry host: no HEAD hit, no mount source.
        await env.service.tag("reg.test/src/small:1", "other.test/dst/small", "1")
        await env.service.tag("reg.test/src/big:1", "other.test/dst/big", "1")
        env.registry.blobs.pop("src/small")
        env.registry.blobs.pop("src/big")
        env.registry.patches.clear()
        assert (await push(env, "other.test/dst/small", "1"))[-1]["aux"]["Digest"] == small.digest
        assert env.registry.patches == []  # one PUT with the body
        assert (await push(env, "other.test/dst/big", "1"))[-1]["aux"]["Digest"] == big.digest
        size = len(big.layers[0])
        expected = [f"{o}-{min(o + 65536, size) - 1}" for o in range(0, size, 65536)]
        assert env.registry.patches == expected
        assert env.registry.blobs["dst/big"][sha(big.layers[0])] == big.layers[0]

    run(env, go)


def test_push_refusals_are_in_the_stream(tmp_path: Path) -> None:
    env = make_env(tmp_path, FakeRegistry(auth="basic"))
    image = make_image([BASE])
    env.registry.put_image("team/app", "v1", image)

    async def go() -> None:
        await pull(env, "reg.test/team/app", "v1", auth=AuthConfig(username="alice", password="secret"))
        got = await push(env, "reg.test/team/nothing", "")
        missing = "An image does not exist locally with the tag: reg.test/team/nothing"
        assert got == [
            {"status": "The push refers to repository [reg.test/team/nothing]"},
            {"errorDetail": {"message": missing}, "error": missing},
        ]
        got = await push(env, "reg.test/team/app", "nope")
        assert got[-1]["error"] == "tag does not exist: reg.test/team/app:nope"
        got = await push(env, "reg.test/team/app", "v1", AuthConfig(username="alice", password="wrong"))
        assert got[-1]["error"] == "unauthorized: authentication required"
        got = await push(env, "reg.test/team/app", "v1")
        assert got[-1]["error"] == "no basic auth credentials"
        got = await push(env, "reg.test/team/app", "v1", AuthConfig(username="alice", password="secret"))
        assert got[-1]["aux"]["Digest"] == image.digest

    run(env, go)


def test_push_without_tag_pushes_every_tag(env: Env) -> None:
    image = make_image([BASE])
    env.registry.put_image("team/app", "v1", image)

    async def go() -> None:
        await pull(env, "reg.test/team/app", "v1")
        await env.service.tag("reg.test/team/app:v1", "reg.test/team/app", "v2")
        got = await push(env, "reg.test/team/app")
        lines = [m["status"] for m in got if str(m.get("status", "")).startswith("v")]
        assert lines == [f"v1: digest: {image.digest} size: {len(image.manifest)}",
                         f"v2: digest: {image.digest} size: {len(image.manifest)}"]  # fmt: skip
        assert [m["aux"]["Tag"] for m in got if "aux" in m] == ["v1", "v2"]
        assert set(env.registry.manifests["team/app"]) >= {"v1", "v2"}

    run(env, go)
