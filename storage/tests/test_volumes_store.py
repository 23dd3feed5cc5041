"""storage.volumes (the local driver's tree) and storage.volumecopy (copy-up, confined to the image)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine import errdefs
from storage.jsonfile import read_json
from storage.mount import Mount
from storage.tests.conftest import MountTracker, needs_root
from storage.volumecopy import copy_up, stat_in_root
from storage.volumes import VolumeStore

# -- VolumeStore ---------------------------------------------------------------------


def test_create_writes_data_dir_and_meta(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path / "volumes")
    record, made = store.create("data", labels={"a": "b"}, options=None)
    assert made
    assert (tmp_path / "volumes" / "data" / "_data").is_dir()
    assert stat.S_IMODE((tmp_path / "volumes" / "data" / "_data").stat().st_mode) == 0o755
    meta = read_json(tmp_path / "volumes" / "data" / "meta.json")
    assert meta["schema"] == 1
    assert meta["labels"] == {"a": "b"} and meta["options"] is None and meta["driver"] == "local"
    assert record.created_ns > 0
    assert store.data_path("data") == tmp_path / "volumes" / "data" / "_data"
    # nothing else is left next to the volume (the temp dir was renamed into place)
    assert sorted(p.name for p in (tmp_path / "volumes").iterdir()) == ["data"]


def test_existing_volume_is_returned_unchanged(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    first, _ = store.create("v1", labels=None, options={"type": "tmpfs", "device": "tmpfs"})
    again, made = store.create("v1", labels={"x": "y"}, options=None)
    assert not made
    assert again == first
    assert again.labels is None and again.options == {"type": "tmpfs", "device": "tmpfs"}


def test_index_is_rebuilt_from_disk_and_leftovers_are_cleared(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    store.create("bb", labels={}, options=None)
    store.create("aa", labels=None, options={})
    (tmp_path / ".tmp-dead").mkdir()
    (tmp_path / ".trash-dead" / "_data").mkdir(parents=True)
    (tmp_path / "nometa" / "_data").mkdir(parents=True)  # data without metadata is kept
    (tmp_path / "stray-file").write_text("x")

    reloaded = VolumeStore(tmp_path)
    names = [r.name for r in reloaded.list()]
    assert names == ["aa", "bb", "nometa"]
    aa, bb = reloaded.get("aa"), reloaded.get("bb")
    assert aa is not None and aa.options == {} and aa.labels is None
    assert bb is not None and bb.labels == {} and bb.options is None
    assert not (tmp_path / ".tmp-dead").exists() and not (tmp_path / ".trash-dead").exists()


def test_remove_is_idempotent_and_leaves_nothing(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    store.create("gone", labels=None, options=None)
    (store.data_path("gone") / "file").write_text("data")
    store.remove("gone")
    store.remove("gone")
    assert store.get("gone") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "x\0y"])
def test_names_that_leave_the_root_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        VolumeStore(tmp_path).create(name)


def test_size_and_emptiness(tmp_path: Path) -> None:
    store = VolumeStore(tmp_path)
    store.create("sz")
    assert store.is_empty("sz") and store.size("sz") == 0
    (store.data_path("sz") / "a").write_bytes(b"x" * 100)
    os.link(store.data_path("sz") / "a", store.data_path("sz") / "b")  # counted once
    (store.data_path("sz") / "d").mkdir()
    (store.data_path("sz") / "d" / "c").write_bytes(b"y" * 23)
    assert not store.is_empty("sz")
    assert store.size("sz") == 123


@pytest.mark.privileged
@needs_root
def test_remove_refuses_a_mounted_volume(tmp_path: Path, mounts: MountTracker) -> None:
    store = VolumeStore(tmp_path / "v")
    store.create("mnt")
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    mounts.mount([Mount("none", str(outside), ("bind",))], store.data_path("mnt"))
    with pytest.raises(errdefs.Conflict):
        store.remove("mnt")
    assert (outside / "precious").read_text() == "keep me"
    assert store.get("mnt") is not None


# -- copy-up -------------------------------------------------------------------------


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc" / "sub").mkdir(parents=True)
    (root / "etc" / "conf").write_text("conf")
    (root / "etc" / "sub" / "deep").write_text("deep")
    os.chmod(root / "etc" / "sub", 0o750)
    os.link(root / "etc" / "conf", root / "etc" / "hard")
    os.symlink("/etc/passwd", root / "etc" / "abs-link")  # copied as a link, never followed
    os.mkfifo(root / "etc" / "fifo", 0o640)
    os.chmod(root / "etc", 0o710)
    os.utime(root / "etc" / "conf", ns=(1_000_000_000, 2_000_000_000))
    return root


def test_copy_up_copies_the_tree_with_metadata(tmp_path: Path) -> None:
    root = _image(tmp_path)
    vol = tmp_path / "vol"
    vol.mkdir()
    assert copy_up(root, "/etc", vol)
    assert (vol / "conf").read_text() == "conf"
    assert (vol / "sub" / "deep").read_text() == "deep"
    assert stat.S_IMODE((vol / "sub").stat().st_mode) == 0o750
    assert stat.S_IMODE(vol.stat().st_mode) == 0o710  # the mount point's own mode
    assert (vol / "conf").stat().st_ino == (vol / "hard").stat().st_ino
    assert os.readlink(vol / "abs-link") == "/etc/passwd"
    assert stat.S_ISFIFO((vol / "fifo").lstat().st_mode)
    assert (vol / "conf").stat().st_mtime_ns == 2_000_000_000


def test_copy_up_only_fills_empty_volumes(tmp_path: Path) -> None:
    root = _image(tmp_path)
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "mine").write_text("x")
    assert not copy_up(root, "/etc", vol)
    assert sorted(os.listdir(vol)) == ["mine"]


def test_copy_up_of_a_missing_path_does_nothing(tmp_path: Path) -> None:
    root = _image(tmp_path)
    vol = tmp_path / "vol"
    vol.mkdir()
    assert not copy_up(root, "/nope/deeper", vol)
    assert not copy_up(root, "/etc/conf/below-a-file", vol)
    assert os.listdir(vol) == []


def test_copy_up_over_a_file_is_dockerds_error(tmp_path: Path) -> None:
    root = _image(tmp_path)
    vol = tmp_path / "vol"
    vol.mkdir()
    with pytest.raises(errdefs.Internal, match="cannot mount volume over existing file"):
        copy_up(root, "/etc/conf", vol)


def test_symlinks_in_the_image_resolve_inside_it(tmp_path: Path) -> None:
    """An image whose mount point is a link to / or to ../../.. still copies only its own files."""
    root = _image(tmp_path)
    host_secret = tmp_path / "secret"
    host_secret.mkdir()
    (host_secret / "key").write_text("host data")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../../../../etc", root / "climb")
    os.symlink(str(host_secret), root / "to-host")
    for link in ("/abs", "/climb"):
        vol = tmp_path / f"vol{link.replace('/', '-')}"
        vol.mkdir()
        assert copy_up(root, link, vol)
        assert (vol / "conf").read_text() == "conf"
    vol = tmp_path / "vol-host"
    vol.mkdir()
    # the host path does not exist inside the image: nothing copied
    assert not copy_up(root, "/to-host", vol)
    assert os.listdir(vol) == []
    st = stat_in_root(root, "/climb/conf")
    assert st is not None and st.st_size == 4
    assert stat_in_root(root, "/to-host/key") is None


@pytest.mark.privileged
@needs_root
def test_copy_up_keeps_owners_and_device_nodes(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "data").mkdir(parents=True)
    (root / "data" / "owned").write_text("x")
    os.chown(root / "data" / "owned", 1234, 5678)
    os.chown(root / "data", 999, 999)
    os.mknod(root / "data" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "data" / "null", 0o666)  # past the umask
    vol = tmp_path / "vol"
    vol.mkdir()
    assert copy_up(root, "/data", vol)
    st = (vol / "owned").stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert (vol.stat().st_uid, vol.stat().st_gid) == (999, 999)
    null = (vol / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
