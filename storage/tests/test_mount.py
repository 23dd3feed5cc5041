"""storage.mount: argv building, mountinfo parsing, and (privileged) mount/unmount behaviour."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import errdefs
from storage.mount import Mount, is_mounted, mount_all, mount_argv, mount_points, unmount
from storage.tests.conftest import MountTracker, needs_root


def test_argv_overlay_and_bind() -> None:
    m = Mount("overlay", "overlay", ("workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"))
    cmd = mount_argv(m, Path("/target"))
    assert cmd.argv == [
        "mount",
        "-t",
        "overlay",
        "-o",
        "workdir=/w,upperdir=/u,lowerdir=/l1:/l2",
        "overlay",
        "/target",
    ]
    assert cmd.cwd is None
    b = mount_argv(Mount("bind", "/src", ("ro", "rbind")), Path("/t"))
    assert b.argv == ["mount", "-t", "bind", "-o", "ro,rbind", "/src", "/t"]
    assert mount_argv(Mount("tmpfs", "tmpfs"), Path("/t")).argv == ["mount", "-t", "tmpfs", "tmpfs", "/t"]


def test_argv_long_overlay_goes_relative() -> None:
    base = "/var/lib/skiff/" + "d" * 60 + "/overlay/snapshots"
    lowers = ":".join(f"{base}/{i}/fs" for i in range(200, 100, -1))
    m = Mount(
        "overlay", "overlay", (f"workdir={base}/201/work", f"upperdir={base}/201/fs", f"lowerdir={lowers}")
    )
    cmd = mount_argv(m, Path("/target"))
    assert cmd.cwd == base
    opts = cmd.argv[cmd.argv.index("-o") + 1]
    assert len(opts) < 4096
    assert opts.startswith("workdir=201/work,upperdir=201/fs,lowerdir=200/fs:199/fs:")
    assert cmd.argv[-1] == "/target"  # the target stays absolute


def test_argv_overlay_too_long_even_relative() -> None:
    lowers = ":".join(f"/{'z' * 50}{i}/fs" for i in range(200))
    with pytest.raises(errdefs.InvalidParameter):
        mount_argv(Mount("overlay", "overlay", (f"lowerdir={lowers}",)), Path("/t"))


def test_mountinfo_unescapes_octal() -> None:
    text = (
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "96 27 0:50 / /tmp/with\\040space\\011tab rw - tmpfs tmpfs rw\n"
        "97 27 0:51 / /tmp/back\\134slash rw - tmpfs tmpfs rw\n"
    )
    assert mount_points(text) == ["/", "/tmp/with space\ttab", "/tmp/back\\slash"]


def test_unmount_not_mounted_is_noop(tmp_path: Path) -> None:
    unmount(tmp_path)
    unmount(tmp_path / "does-not-exist")
    assert not is_mounted(tmp_path)
    assert is_mounted("/")


@pytest.mark.privileged
@needs_root
def test_mount_unmount_bind_with_odd_path(tmp_path: Path, mounts: MountTracker) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hi")
    target = mounts.mount([Mount("bind", str(src), ("ro", "rbind"))], tmp_path / "odd dir\twith tab")
    assert is_mounted(target)
    assert (target / "f").read_text() == "hi"
    unmount(target)
    assert not is_mounted(target)
    unmount(target)  # idempotent


@pytest.mark.privileged
@needs_root
def test_mount_all_unwinds_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    good = Mount("tmpfs", "tmpfs", ("size=1m",))
    bad = Mount("overlay", "overlay", (f"lowerdir={tmp_path}/missing1:{tmp_path}/missing2",))
    try:
        with pytest.raises(errdefs.Internal, match="failed to mount"):
            mount_all([good, bad], target)
        assert not is_mounted(target)
    finally:
        unmount(target)


@pytest.mark.privileged
@needs_root
def test_unmount_stacked_and_busy(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    try:
        mount_all([Mount("tmpfs", "tmpfs", ("size=1m",)), Mount("tmpfs", "tmpfs", ("size=1m",))], target)
        (target / "f").write_text("x")
        # Keep the top mount busy: an open directory fd on it.
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            unmount(target)  # falls back to a lazy detach for the busy one
        finally:
            os.close(fd)
        assert not is_mounted(target)
    finally:
        unmount(target)
