"""ContainerArchive (docker cp) without a kernel mount: the container root is a plain directory.

The root-opening step is replaced by a directory under tmp_path; everything after it (the view,
mounts of the container as overlays, dockerd's checks, texts and events, the body pipe and the
decompression) is the real code. engine/tests/test_archive_attacks.py runs against real overlays.
"""

from __future__ import annotations

import asyncio
import base64
import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import zstandard

from engine import errdefs
from engine.containers.archive import ContainerArchive, PathStat, overlays_for
from engine.containers.model import Container
from runtime.bundle import Bundle
from storage.fsroot import Overlay

CID = "c" * 64
UID, GID = os.getuid(), os.getgid()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def container(**fields: Any) -> Container:
    base: dict[str, Any] = {
        "id": CID,
        "name": "/box",
        "created": "",
        "image_id": "sha256:" + "a" * 64,
        "path": "sh",
        "args": [],
        "config": {"Image": "busybox"},
        "host_config": {},
    }
    base.update(fields)
    return Container(**base)


class StubContainers:
    """What ContainerArchive uses of ContainerService."""

    def __init__(self, tmp: Path, c: Container) -> None:
        self.c = c
        self.bundles = tmp / "exec" / "bundles"
        self.live: dict[str, Any] = {}
        self.layers = SimpleNamespace(snapshotter=None)
        self.published: list[str] = []
        self.timeline: list[str] = []  # container and volume events, in order
        self.mounts = StubMounts(self.timeline)
        self._lock = asyncio.Lock()

    def bundle(self, cid: str) -> Bundle:
        return Bundle(self.bundles / cid)

    def get(self, ref: str) -> Container:
        if ref not in ("box", CID, CID[:12]):
            raise errdefs.no_such_container(ref)
        return self.c

    def lock(self, cid: str) -> asyncio.Lock:
        return self._lock

    def publish(self, c: Container, action: str, extra: dict[str, str] | None = None) -> None:
        self.published.append(action)
        self.timeline.append(action)


class StubMounts:
    """ContainerMounts' view announcements (the volume "mount"/"unmount" events of docker cp)."""

    def __init__(self, timeline: list[str]) -> None:
        self.timeline = timeline

    def announce_view(self, c: Container) -> None:
        self.timeline.append("mount")

    def announce_view_closed(self, c: Container) -> None:
        self.timeline.append("unmount")


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_text("hi\n")
    (root / "d" / "f").chmod(0o644)
    (root / "d").chmod(0o755)
    (root / "ld").symlink_to("/d")
    (root / "d" / "lf").symlink_to("f")
    (root / "loop1").symlink_to("/loop2")
    (root / "loop2").symlink_to("/loop1")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\nbox:x:{UID}:{GID}::/:/bin/sh\n")
    (root / "etc" / "group").write_text(f"root:x:0:\nbox:x:{GID}:\n")
    (tmp_path / "vol").mkdir()
    (tmp_path / "rovol").mkdir()
    return root


def make_archive(tmp: Path, root: Path, c: Container) -> tuple[ContainerArchive, StubContainers]:
    stub = StubContainers(tmp, c)
    archive = ContainerArchive(cast(Any, stub))
    archive._open_root = lambda c, write: os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # type: ignore[method-assign]
    return archive, stub


@pytest.fixture
def box(tmp_path: Path, rootfs: Path) -> tuple[ContainerArchive, StubContainers]:
    mounts = [
        {"Type": "volume", "Name": "v", "Source": str(tmp_path / "vol"), "Destination": "/vol", "RW": True},
        {"Type": "bind", "Source": str(tmp_path / "rovol"), "Destination": "/ro", "RW": False},
    ]
    return make_archive(tmp_path, rootfs, container(mount_points=mounts))


def decoded(stat: PathStat) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(base64.b64decode(stat.header())))


async def chunks(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


def tar_of(**files: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            data = text.encode()
            info.size, info.uid, info.gid = len(data), UID, GID
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --- the stat header ----------------------------------------------------------------------------


def test_header_is_byte_for_byte_dockerds() -> None:
    # X-Docker-Container-Path-Stat captured from dockerd 20.10 for a 0755 directory /d.
    stat = PathStat("d", 4096, 2147484141, "2026-11-27T22:03:46.402896998Z", "")
    assert stat.header() == (
        "eyJuYW1lIjoiZCIsInNpemUiOjQwOTYsIm1vZGUiOjIxNDc0ODQxNDEsIm10aW1lIjoiMjAyNi0xMS0y"
        "N1QyMjowMzo0Ni40MDI4OTY5OThaIiwibGlua1RhcmdldCI6IiJ9"
    )
    assert "\\u003c" in base64.b64decode(PathStat("<&>", 0, 0, "", "").header()).decode()


@pytest.mark.parametrize(
    ("path", "name", "mode", "link"),
    [
        ("/d", "d", 0o20000000755, ""),
        ("/d/", "d", 0o20000000755, ""),
        ("/d/f", "f", 0o644, ""),
        ("/ld", "ld", (1 << 27) | 0o777, "/d"),
        ("/ld/", "ld", (1 << 31) | 0o755, ""),
        ("/d/lf", "lf", (1 << 27) | 0o777, "/d/f"),
        ("d/f", "f", 0o644, ""),
        ("/", "/", (1 << 31) | 0o755, ""),
        ("/vol", "vol", None, ""),
    ],
)
def test_stat(
    box: tuple[ContainerArchive, StubContainers], path: str, name: str, mode: int | None, link: str
) -> None:
    archive, _ = box
    found = decoded(run(archive.stat("box", path)))
    assert found["name"] == name and found["linkTarget"] == link
    assert set(found) == {"name", "size", "mode", "mtime", "linkTarget"}
    if mode is not None:
        assert found["mode"] == mode
    assert found["mtime"].endswith("Z")


def test_stat_errors(box: tuple[ContainerArchive, StubContainers]) -> None:
    archive, _ = box
    with pytest.raises(errdefs.NotFound, match=r"^Could not find the file /nope in container box$"):
        run(archive.stat("box", "/nope"))
    with pytest.raises(errdefs.NotFound, match=r"^No such container: other$"):
        run(archive.stat("other", "/"))
    with pytest.raises(errdefs.Internal, match=r"^lstat /d/f/: not a directory$"):
        run(archive.stat("box", "/d/f/"))
    with pytest.raises(errdefs.Internal, match=r"^evalSymlinksInScope: too many links in /loop1$"):
        run(archive.stat("box", "/loop1"))
    with pytest.raises(errdefs.Internal, match=r"^lstat /loop1/x: too many levels of symbolic links$"):
        run(archive.stat("box", "/loop1/x"))


def test_removing_or_dead_containers_conflict(tmp_path: Path, rootfs: Path) -> None:
    c = container()
    archive, _ = make_archive(tmp_path, rootfs, c)
    c.state.status = "removing"
    with pytest.raises(errdefs.Conflict, match=f"^container {CID} is being removed$"):
        run(archive.stat("box", "/"))
    c.state.status, c.state.dead = "dead", True
    with pytest.raises(errdefs.Conflict, match=f"^container {CID} is dead$"):
        run(archive.put("box", "/", chunks(b"")))


# --- GET --------------------------------------------------------------------------------------


async def _get(archive: ContainerArchive, path: str) -> tuple[PathStat, bytes]:
    stat, stream = await archive.get("box", path)
    return stat, b"".join([chunk async for chunk in stream])


def test_get_directory_file_and_link(box: tuple[ContainerArchive, StubContainers]) -> None:
    archive, stub = box
    stat, data = run(_get(archive, "/ld/"))
    assert stat.name == "ld" and stat.mode & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert tf.getnames() == ["ld", "ld/f", "ld/lf", "ld/sub"]
    stat, data = run(_get(archive, "/d/.."))
    assert stat.name == "/"  # GET cleans the path first, HEAD does not
    _, data = run(_get(archive, "/d/lf"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [(m.name, m.linkname) for m in tf] == [("lf", "f")]
    assert stub.published == ["archive-path"] * 3
    with pytest.raises(errdefs.NotFound, match=r"^Could not find the file /d/nope in container box$"):
        run(_get(archive, "/d/nope"))
    assert stub.published == ["archive-path"] * 3


def test_volume_events_bracket_each_view_as_dockerds(
    box: tuple[ContainerArchive, StubContainers], rootfs: Path
) -> None:
    """dockerd: mount, unmount (stat); mount, extract-to-dir, unmount; mount, archive-path, unmount."""
    archive, stub = box
    run(archive.stat("box", "/d"))
    run(archive.put("box", "/d", chunks(tar_of(n="new"))))
    run(_get(archive, "/d/n"))
    assert stub.timeline == [
        "mount",
        "unmount",
        "mount",
        "extract-to-dir",
        "unmount",
        "mount",
        "archive-path",
        "unmount",
    ]
    stub.timeline.clear()
    with pytest.raises(errdefs.NotFound):
        run(archive.stat("box", "/nope"))
    with pytest.raises(errdefs.InvalidParameter):
        run(archive.put("box", "/d/f", chunks(tar_of(x="x"))))
    assert stub.timeline == ["mount", "unmount", "mount", "unmount"]  # failures publish no action


# --- PUT --------------------------------------------------------------------------------------


def test_put_extracts_and_publishes(box: tuple[ContainerArchive, StubContainers], rootfs: Path) -> None:
    archive, stub = box
    data = tar_of(a="A" * 100_000, b="B")
    run(archive.put("box", "/ld", chunks(data)))  # the last element is followed, as dockerd's EvalSymlinks
    assert (rootfs / "d" / "a").read_text() == "A" * 100_000 and (rootfs / "d" / "b").read_text() == "B"
    assert stub.published == ["extract-to-dir"]


@pytest.mark.parametrize(
    "compress",
    [
        gzip.compress,
        bz2.compress,
        lzma.compress,
        lambda data: zstandard.ZstdCompressor().compress(data),
    ],
)
def test_put_decompresses(box: tuple[ContainerArchive, StubContainers], rootfs: Path, compress: Any) -> None:
    archive, _ = box
    run(archive.put("box", "/vol", chunks(compress(tar_of(z="zipped")))))
    assert (rootfs.parent / "vol" / "z").read_text() == "zipped"


def test_put_checks(box: tuple[ContainerArchive, StubContainers], tmp_path: Path, rootfs: Path) -> None:
    archive, stub = box
    body = tar_of(x="x")
    with pytest.raises(errdefs.NotFound, match=r"^Could not find the file /nope in container box$"):
        run(archive.put("box", "/nope", chunks(body)))
    with pytest.raises(errdefs.InvalidParameter, match=r"^extraction point is not a directory$"):
        run(archive.put("box", "/d/f", chunks(body)))
    with pytest.raises(errdefs.InvalidParameter, match=r"^mounted volume is marked read-only$"):
        run(archive.put("box", "/ro", chunks(body)))
    with pytest.raises(
        errdefs.Internal, match=r'^cannot overwrite directory "/d/sub" with non-directory "/d"$'
    ):
        run(archive.put("box", "/d", chunks(tar_of(sub="s")), no_overwrite_dir_non_dir=True))
    assert list((tmp_path / "rovol").iterdir()) == [] and (rootfs / "d" / "sub").is_dir()
    assert stub.published == []

    ro = container(host_config={"ReadonlyRootfs": True}, mount_points=box[1].c.mount_points)
    ro_archive, _ = make_archive(tmp_path, rootfs, ro)
    with pytest.raises(errdefs.InvalidParameter, match=r"^container rootfs is marked read-only$"):
        run(ro_archive.put("box", "/d", chunks(body)))
    run(ro_archive.put("box", "/vol", chunks(body)))  # a writable volume in a read-only rootfs
    assert (tmp_path / "vol" / "x").read_text() == "x"


def test_put_fails_fast_without_reading_the_whole_body(box: tuple[ContainerArchive, StubContainers]) -> None:
    archive, _ = box
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while consumed < 50_000_000:
            consumed += 65536
            await asyncio.sleep(0)
            yield b"x" * 65536

    with pytest.raises(errdefs.Internal, match=r"^archive/tar: invalid tar header$"):
        run(archive.put("box", "/d", endless()))
    assert consumed < 50_000_000


def test_put_copy_uid_gid_uses_the_containers_user(tmp_path: Path, rootfs: Path) -> None:
    archive, _ = make_archive(tmp_path, rootfs, container(config={"User": "box"}))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("owned")
        info.uid = info.gid = UID  # what the header says is replaced by the container user's ids
        tf.addfile(info, io.BytesIO())
    run(archive.put("box", "/d", chunks(buf.getvalue()), copy_uid_gid=True))
    st = (rootfs / "d" / "owned").stat()
    assert (st.st_uid, st.st_gid) == (UID, GID)
    nobody, _ = make_archive(tmp_path, rootfs, container(config={"User": "ghost"}))
    with pytest.raises(errdefs.Internal, match="unable to find user ghost"):
        run(nobody.put("box", "/d", chunks(buf.getvalue()), copy_uid_gid=True))


# --- mounts -----------------------------------------------------------------------------------


def test_overlays_for_follows_dockerds_setup_mounts(tmp_path: Path) -> None:
    for name in ("hosts", "hostname", "resolv.conf"):
        (tmp_path / name).write_text(name)
    c = container(
        mount_points=[
            {"Type": "volume", "Source": "/v/a/b", "Destination": "/a/b", "RW": True},
            {"Type": "tmpfs", "Source": "", "Destination": "/tmp", "RW": True},
            {"Type": "volume", "Source": "", "Destination": "/pending", "RW": True},
            {"Type": "bind", "Source": "/v/a", "Destination": "/a", "RW": False},
            {"Type": "bind", "Source": "/my/hosts", "Destination": "/etc/hosts", "RW": True},
        ],
        host_config={"ReadonlyRootfs": True},
        hosts_path=str(tmp_path / "hosts"),
        hostname_path=str(tmp_path / "hostname"),
        resolv_conf_path=str(tmp_path / "resolv.conf"),
    )
    assert overlays_for(c) == [
        Overlay("/a", "/v/a", False),
        Overlay("/a/b", "/v/a/b", True),
        Overlay("/etc/hosts", "/my/hosts", True),
        Overlay("/etc/resolv.conf", str(tmp_path / "resolv.conf"), False),
        Overlay("/etc/hostname", str(tmp_path / "hostname"), False),
    ]
