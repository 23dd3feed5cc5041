"""OverlaySnapshotter: the conformance suite, mount shapes, and real overlay mounts."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import pytest

from engine import errdefs
from storage.mount import Mount
from storage.snapshots import FS_IOC_GETFLAGS, FS_TOPDIR_FL, OverlaySnapshotter, mark_topdir
from storage.tests.conftest import MountTracker, needs_root
from storage.tests.snapshotter_suite import SnapshotterSuite


class TestOverlayConformance(SnapshotterSuite):
    def new(self, root: Path) -> OverlaySnapshotter:
        return OverlaySnapshotter(root)


def chain(sn: OverlaySnapshotter, n: int) -> list[str]:
    names = []
    parent: str | None = None
    for i in range(n):
        name = f"layer{i}"
        sn.prepare(f"tmp{i}", parent)
        sn.commit(name, f"tmp{i}")
        names.append(name)
        parent = name
    return names


def test_mount_shapes(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path)

    def fs(key: str) -> str:
        return str(sn.upperdir(key))

    assert sn.prepare("base-rw", None) == [Mount("bind", fs("base-rw"), ("rw", "rbind"))]
    chain(sn, 3)
    assert sn.view("v1", "layer0") == [Mount("bind", fs("layer0"), ("ro", "rbind"))]
    assert sn.view("v3", "layer2") == [
        Mount("overlay", "overlay", (f"lowerdir={fs('layer2')}:{fs('layer1')}:{fs('layer0')}",))
    ]
    rw = sn.prepare("rw", "layer1")
    work = str(sn.upperdir("rw").parent / "work")
    assert rw == [
        Mount(
            "overlay",
            "overlay",
            (f"workdir={work}", f"upperdir={fs('rw')}", f"lowerdir={fs('layer1')}:{fs('layer0')}"),
        )
    ]
    assert sn.mounts("rw") == rw
    # Numeric directories keep lowerdir short whatever the keys look like.
    assert all(Path(p).parent.name.isdigit() for p in rw[0].options[2][len("lowerdir=") :].split(":"))


def test_root_with_option_separators_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        OverlaySnapshotter(tmp_path / "a,b")


@pytest.mark.privileged
@needs_root
def test_overlay_mount_sees_lower_layers(tmp_path: Path, mounts: MountTracker) -> None:
    sn = OverlaySnapshotter(tmp_path / "overlay")
    sn.prepare("k0", None)
    (sn.upperdir("k0") / "base.txt").write_text("base")
    (sn.upperdir("k0") / "shadowed").write_text("lower")
    sn.commit("l0", "k0")
    sn.prepare("k1", "l0")
    (sn.upperdir("k1") / "shadowed").write_text("upper")
    sn.commit("l1", "k1")

    root = mounts.mount(sn.prepare("rw", "l1"), tmp_path / "rootfs")
    assert (root / "base.txt").read_text() == "base"
    assert (root / "shadowed").read_text() == "upper"
    (root / "written").write_text("rw")
    assert (sn.upperdir("rw") / "written").read_text() == "rw"
    assert not (sn.upperdir("l1") / "written").exists()

    view = mounts.mount(sn.view("v", "l1"), tmp_path / "view")
    assert sorted(p.name for p in view.iterdir()) == ["base.txt", "shadowed"]
    with pytest.raises(OSError):
        (view / "nope").write_text("x")

    single = mounts.mount(sn.view("v0", "l0"), tmp_path / "single")
    assert (single / "shadowed").read_text() == "lower"
    with pytest.raises(OSError):
        (single / "nope").write_text("x")

    base_rw = mounts.mount(sn.prepare("scratch", None), tmp_path / "scratch")
    (base_rw / "f").write_text("bind")
    assert (sn.upperdir("scratch") / "f").read_text() == "bind"


@pytest.mark.privileged
@needs_root
def test_overlay_many_layers(tmp_path: Path, mounts: MountTracker) -> None:
    # Long root path so that absolute lowerdirs overflow the 4096-byte mount option page.
    root = tmp_path / ("x" * 100) / ("y" * 100) / "overlay"
    sn = OverlaySnapshotter(root)
    names = chain(sn, 120)
    for i, name in enumerate(names):
        (sn.upperdir(name) / f"f{i}").write_text(str(i))
    rw = sn.prepare("rw", names[-1])
    assert len(",".join(rw[0].options)) > 4096
    target = mounts.mount(rw, tmp_path / "rootfs")
    assert len(list(target.iterdir())) == 120
    assert (target / "f0").read_text() == "0"


def test_snapshot_directories_are_spread_where_the_file_system_can(tmp_path: Path) -> None:
    # ext4 honours FS_TOPDIR_FL (chattr +T); elsewhere the hint is refused and nothing changes.
    sn = OverlaySnapshotter(tmp_path / "overlay")
    snapshots = tmp_path / "overlay" / "snapshots"
    fd = os.open(snapshots, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
    except OSError:
        pytest.skip("this file system has no inode flags")
    finally:
        os.close(fd)
    assert struct.unpack_from("=I", buf)[0] & FS_TOPDIR_FL
    assert mark_topdir(snapshots)  # idempotent
    sn.prepare("a", None)
    assert (snapshots / "1" / "fs").is_dir()
    assert not mark_topdir(tmp_path / "missing")
