"""``docker commit`` (engine/images/commit.py) on real image storage, the FakeRuntime and a real
overlay snapshotter in a temp dir: dockerd's config merge, the child image config, the layer
(whiteouts and opaque directories round-trip through a real overlay mount; the root-only tests are
marked privileged), pause handling and events, and the error texts.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import errdefs
from engine.containers.admin import ContainerAdmin
from engine.containers.model import Container
from engine.containers.service import ContainerService
from engine.containers.store import ContainerStore
from engine.events import EventBus
from engine.images.commit import (
    CommitOptions,
    RwLayer,
    child_config,
    commit_container,
    init_artifacts,
    merge,
    new_container_config,
)
from engine.images.model import Image
from engine.images.service import ImageService
from engine.images.tests.imagetars import ArchiveImage, docker_archive, layer_tar
from runtime.fake import FakeRuntime
from storage.content import ContentStore
from storage.images import ImageMeta, ImageStore
from storage.layers import LayerStore
from storage.mount import Mount, mount_all, unmount
from storage.snapshots import OverlaySnapshotter

BASE_FILES = {
    "bin/sh": b"#!shell\n",
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": b"root:x:0:\n",
    "data/old/a": b"a\n",
    "data/old/sub/deep": b"deep\n",
    "home/u/notes": b"notes\n",
}
BASE = ArchiveImage(
    ["busybox:latest"],
    [layer_tar(BASE_FILES)],
    {"config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"base": "1"}}},
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


class NoMountSnapshotter(OverlaySnapshotter):
    """The FakeRuntime needs no root filesystem: starting a container mounts nothing."""

    def mounts(self, key: str) -> list[Mount]:
        return []


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bus = EventBus()
        content = ContentStore(tmp / "content")
        self.content = content
        self.snapshotter = NoMountSnapshotter(tmp / "overlay")
        self.layers = LayerStore(content, self.snapshotter)
        self.store = ImageStore(tmp / "image", content)
        self.images = ImageService(self.store, self.layers, content, self.bus, docker_version="test")
        self.runtime = FakeRuntime()
        self.service = ContainerService(
            store=ContainerStore(tmp / "containers"),
            images=self.images,
            layers=self.layers,
            runtime=self.runtime,
            events=self.bus,
            exec_root=tmp / "exec",
        )
        self.admin = ContainerAdmin(self.service)

    async def load_base(self) -> None:
        [m async for m in await self.images.load(_chunks(docker_archive([BASE])))]

    async def create(self, **body: Any) -> Container:
        body.setdefault("Image", "busybox")
        c, _ = await self.service.create(None, body)
        return c

    async def commit(self, ref: str, **options: Any) -> str:
        return await commit_container(self.service, self.admin, self.images, ref, CommitOptions(**options))

    def upper(self, c: Container) -> Path:
        return self.snapshotter.upperdir(c.snapshot_key)

    def events(self, actor: str) -> list[str]:
        sub = self.bus.subscribe(since=0)
        try:
            return [e.action for e in sub.backlog if e.actor_id == actor]
        finally:
            sub.close()

    def attrs(self, actor: str, action: str) -> dict[str, str]:
        sub = self.bus.subscribe(since=0)
        try:
            return dict([e for e in sub.backlog if e.actor_id == actor and e.action == action][-1].attributes)
        finally:
            sub.close()

    def layer_members(self, image_id: str) -> dict[str, tarfile.TarInfo]:
        blob = self.store.get(image_id).meta.layers[-1].blob
        assert blob is not None
        with tarfile.open(fileobj=io.BytesIO(self.content.read_bytes(blob))) as tf:
            return {m.name: m for m in tf.getmembers()}

    def test(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``body`` on a fresh loop and stop every fake container on it, even on failure."""

        async def wrapped() -> None:
            try:
                await self.load_base()
                await body()
            finally:
                await self.service.shutdown()
                await self.runtime.close()

        run(wrapped())


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "mnt"
    target.mkdir()
    yield target
    unmount(target)


# --- config ----------------------------------------------------------------------------------------


def test_merge_fills_what_the_new_config_leaves_unset() -> None:
    container = {
        "User": "app",
        "ExposedPorts": {"80/tcp": {}},
        "Env": ["PATH=/bin", "A=1"],
        "Labels": {"l": "c", "k": "c"},
        "Cmd": ["run"],
        "Entrypoint": ["/init"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5, "Retries": 3},
        "WorkingDir": "/w",
        "Volumes": {"/v": {}},
        "StopSignal": "SIGINT",
    }
    assert merge({}, dict(container)) == {**container, "Labels": {"l": "c", "k": "c"}}
    user = {
        "ExposedPorts": {"53/udp": {}},
        "Env": ["A=2", "B=2"],
        "Labels": {"k": "u"},
        "Cmd": ["x"],
        "Healthcheck": {"Test": [], "Timeout": 7},
        "Volumes": {"/u": {}},
    }
    got = merge(user, dict(container))
    assert got["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}}
    assert got["Env"] == ["A=2", "B=2", "PATH=/bin"]
    assert got["Labels"] == {"k": "u", "l": "c"}
    # A Cmd of its own keeps it; the Entrypoint still comes from the container when unset.
    assert (got["Cmd"], got["Entrypoint"]) == (["x"], ["/init"])
    assert got["Healthcheck"] == {"Test": ["CMD", "true"], "Timeout": 7, "Interval": 5, "Retries": 3}
    assert got["Volumes"] == {"/u": {}, "/v": {}}
    assert (got["User"], got["WorkingDir"], got["StopSignal"]) == ("app", "/w", "SIGINT")
    # An Entrypoint of its own: the container's Cmd is not taken.
    assert merge({"Entrypoint": ["e"]}, dict(container)).get("Cmd") is None
    # Labels become {} even when nobody has any (dockerd's images show "Labels": {}).
    assert merge({}, {})["Labels"] == {}


def test_new_config_from_changes_body_and_container() -> None:
    container = {"Hostname": "abc", "Image": "busybox", "Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "x"]}
    # No body: the container's own Config with the changes.
    cfg = new_container_config(container, None, ['CMD ["cat","/x"]', "ENV A=1", "EXPOSE 80"])
    assert cfg["Hostname"] == "abc" and cfg["Image"] == "busybox"
    assert cfg["Cmd"] == ["cat", "/x"] and cfg["Env"] == ["PATH=/bin", "A=1"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}}
    assert container["Cmd"] == ["sh", "-c", "x"]  # the container record is not touched
    # A body replaces the Config: what merge does not fill stays empty (as with dockerd).
    cfg = new_container_config(container, {"Cmd": ["x"], "Env": ["B=2"]}, [])
    assert cfg.get("Hostname") is None and cfg.get("Image") is None
    assert cfg["Cmd"] == ["x"] and cfg["Env"] == ["B=2", "PATH=/bin"]
    # ENTRYPOINT without CMD in the same changes drops the Cmd, and merge does not bring it back.
    cfg = new_container_config(container, None, ['ENTRYPOINT ["echo"]'])
    assert (cfg["Entrypoint"], cfg["Cmd"]) == (["echo"], None)
    cfg = new_container_config(container, None, ["HEALTHCHECK --interval=5s CMD true", "STOPSIGNAL SIGINT"])
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    assert cfg["StopSignal"] == "SIGINT"
    for bad, text in [
        ("FOO bar", "foo is not a valid change command"),
        ("ENV A", "ENV must have two arguments"),
        ("HEALTHCHECK FOO", 'Unknown type "FOO" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ]:
        with pytest.raises(errdefs.InvalidParameter) as exc:
            new_container_config(container, None, [bad])
        assert exc.value.message == text


def _parent(config: dict[str, Any]) -> Image:
    return Image("sha256:" + "p" * 64, config, b"", ImageMeta())


def test_child_config_shape() -> None:
    parent = _parent(
        {
            "architecture": "arm64",
            "variant": "v8",
            "os": "linux",
            "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "ADD x"}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
        }
    )
    layer = RwLayer("c" * 64, parent.id, "linux", {}, Path("/nonexistent"))
    config = {"Cmd": ["cat"], "Labels": {"b": "2", "a": "1"}}
    out = child_config(
        parent,
        layer,
        config,
        {"Cmd": ["sh", "-c", "echo hi"], "Hostname": "h"},
        author="me",
        comment="msg",
        diff_id="sha256:" + "2" * 64,
        created="2026-01-01T00:00:00.5Z",
        docker_version="test",
    )
    assert list(out) == sorted(out)
    assert (out["architecture"], out["variant"], out["os"]) == ("arm64", "v8", "linux")
    assert (out["author"], out["container"], out["docker_version"]) == ("me", "c" * 64, "test")
    assert "comment" not in out  # dockerd keeps the message in the history only
    assert out["config"]["Cmd"] == ["cat"] and list(out["config"]["Labels"]) == ["a", "b"]
    assert out["container_config"]["Hostname"] == "h"
    assert out["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert out["history"][-1] == {
        "created": "2026-01-01T00:00:00.5Z",
        "author": "me",
        "created_by": "sh -c echo hi",
        "comment": "msg",
    }
    empty = child_config(
        parent, layer, {}, {}, author="", comment="", diff_id=None, created="t", docker_version=""
    )
    assert empty["history"][-1] == {"created": "t", "empty_layer": True}
    assert empty["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64]
    assert "author" not in empty and "docker_version" not in empty


def test_init_artifacts_are_only_runc_mount_points(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (upper / "etc").mkdir(parents=True)
    for name in ("hostname", "hosts", "resolv.conf"):
        (upper / "etc" / name).touch()
    (upper / "proc").mkdir()
    (upper / ".dockerenv").touch()
    (upper / "dev" / "pts").mkdir(parents=True)
    assert init_artifacts(upper, [lower]) == {
        "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc", "proc", ".dockerenv", "dev", "dev/pts",
    }  # fmt: skip
    # A real change in /etc keeps /etc (and a non-empty /etc/hosts is content, not a mount point).
    (upper / "etc" / "motd").write_text("hi")
    (upper / "etc" / "hosts").write_text("127.0.0.1 x\n")
    assert init_artifacts(upper, [lower]) == {
        "etc/hostname", "etc/resolv.conf", "proc", ".dockerenv", "dev", "dev/pts",
    }  # fmt: skip


# --- the whole commit -------------------------------------------------------------------------------


def test_commit_of_an_unchanged_container_is_an_empty_layer_with_history(h: Harness) -> None:
    async def go() -> None:
        c = await h.create(Cmd=["true"])
        # Mount points (dockerd's init layer entries) in the upper dir are not part of the commit.
        (h.upper(c) / "etc").mkdir(exist_ok=True)
        (h.upper(c) / "etc" / "hostname").touch()
        (h.upper(c) / "proc").mkdir(exist_ok=True)
        image_id = await h.commit(c.id, repo="skiffcommit/empty", comment="nothing", author="me")
        base = await h.images.resolve("busybox")
        image = await h.images.resolve("skiffcommit/empty:latest")
        assert image.id == image_id and image.diff_ids == base.diff_ids
        assert image.meta.parent == base.id
        history = await h.images.history(image_id)
        assert [r["CreatedBy"] for r in history] == ["true", "ADD layer0"]
        assert history[0]["Id"] == image_id and history[1]["Id"] == base.id
        assert history[0]["Comment"] == "nothing" and history[0]["Size"] == 0
        assert image.history[-1]["empty_layer"] is True
        inspect = await h.images.inspect(image_id)
        assert inspect["Author"] == "me" and inspect["Comment"] == "nothing"
        assert inspect["Container"] == c.id and inspect["Config"]["Labels"] == {"base": "1"}
        assert inspect["RepoTags"] == ["skiffcommit/empty:latest"]
        assert h.events(image_id) == ["tag"]
        assert h.events(c.id) == ["create", "commit"]  # not running: no pause
        assert h.attrs(c.id, "commit") == {
            "base": "1",
            "comment": "nothing",
            "image": "busybox",
            "imageID": image_id,
            "imageRef": "skiffcommit/empty:latest",
            "name": c.name.lstrip("/"),
        }

    h.test(go)


def test_commit_errors(h: Harness) -> None:
    async def go() -> None:
        c = await h.create()
        with pytest.raises(errdefs.NotFound) as nf:
            await h.commit("nope")
        assert nf.value.message == "No such container: nope"
        with pytest.raises(errdefs.InvalidParameter) as empty:
            await h.commit("")
        assert empty.value.message == 'invalid name or ID supplied: ""'
        with pytest.raises(errdefs.InvalidParameter) as digest:
            await h.commit(c.id, repo="x@sha256:" + "a" * 64)
        assert digest.value.message == "cannot import digest reference"
        before = h.store.ids()
        with pytest.raises(errdefs.InvalidParameter) as bad:
            await h.commit(c.id, changes=["RUN true"])
        assert bad.value.message == "run is not a valid change command"
        c.state.dead = True
        with pytest.raises(errdefs.Conflict) as dead:
            await h.commit(c.id)
        assert dead.value.message == f"You cannot commit container {c.id} which is Dead"
        assert h.store.ids() == before
        assert "commit" not in h.events(c.id)

    h.test(go)


def test_commit_pauses_a_running_container_unless_told_not_to(h: Harness) -> None:
    async def go() -> None:
        c = await h.create(Cmd=["sleep", "60"])
        await h.service.start(c.id)
        (h.upper(c) / "new").write_text("n")
        image_id = await h.commit(c.id, comment="m")
        assert h.events(c.id)[-3:] == ["pause", "commit", "unpause"]
        assert not c.state.paused and c.state.status == "running"
        assert h.runtime.calls[-2:] == [("pause", c.id), ("resume", c.id)]
        assert set(h.layer_members(image_id)) == {"new"}
        await h.commit(c.id, pause=False)
        assert h.events(c.id)[-2:] == ["unpause", "commit"]
        # Already paused: left paused, no pause/unpause of its own.
        await h.admin.pause(c.id)
        await h.commit(c.id)
        assert h.events(c.id)[-2:] == ["pause", "commit"] and c.state.paused

    h.test(go)


@pytest.mark.privileged
def test_whiteouts_and_opaque_dirs_round_trip_through_a_real_overlay(h: Harness, mountpoint: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (overlay mounts)")

    async def go() -> None:
        c = await h.create(Cmd=["sh"])
        mount_all(OverlaySnapshotter.mounts(h.snapshotter, c.snapshot_key), mountpoint)
        try:
            (mountpoint / "etc" / "passwd").unlink()  # a lower file deleted: whiteout
            for p in sorted((mountpoint / "data" / "old").rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            (mountpoint / "data" / "old").rmdir()
            (mountpoint / "data" / "old").mkdir()  # a lower dir replaced: opaque dir
            (mountpoint / "data" / "old" / "b").write_text("b\n")
            (mountpoint / "x").write_text("hi\n")
            (mountpoint / "etc" / "hostname").touch()  # what runc makes as a mount target
        finally:
            unmount(mountpoint)
        image_id = await h.commit(c.id, changes=['CMD ["cat","/x"]'], repo="skiffcommit/fs", tag="v1")
        members = h.layer_members(image_id)
        assert sorted(members) == [
            "data", "data/old", "data/old/.wh..wh..opq", "data/old/b", "etc", "etc/.wh.passwd", "x",
        ]  # fmt: skip
        assert members["etc/.wh.passwd"].isreg() and members["etc/.wh.passwd"].size == 0
        image = await h.images.resolve("skiffcommit/fs:v1")
        assert len(image.diff_ids) == 2
        assert json.loads(image.raw)["config"]["Cmd"] == ["cat", "/x"]
        # A container of the new image sees the committed filesystem.
        child = await h.create(Image="skiffcommit/fs:v1")
        mount_all(OverlaySnapshotter.mounts(h.snapshotter, child.snapshot_key), mountpoint)
        try:
            assert not (mountpoint / "etc" / "passwd").exists()
            assert (mountpoint / "etc" / "group").read_text() == "root:x:0:\n"
            assert sorted(os.listdir(mountpoint / "data" / "old")) == ["b"]
            assert (mountpoint / "x").read_text() == "hi\n"
            assert (mountpoint / "home" / "u" / "notes").read_text() == "notes\n"
        finally:
            unmount(mountpoint)
        history = await h.images.history("skiffcommit/fs:v1")
        assert history[0]["CreatedBy"] == "sh" and history[0]["Size"] == len("b\n") + len("hi\n")

    h.test(go)
