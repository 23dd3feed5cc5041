"""docker cp archives over an FsView: the tar GET sends, and PUT's extraction with dockerd's rules.

Everything happens under tmp_path with the caller's own uid (device nodes need root and are
marked privileged).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.fscopy import ExtractOptions, export_tar, extract_tar
from storage.fsroot import ArchiveError, FsView, Overlay, PathError

UID, GID = os.getuid(), os.getgid()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_text("hi\n")
    (root / "d" / "lf").symlink_to("f")
    (root / "ld").symlink_to("/d")
    (root / "etc").mkdir()
    (root / "tmp").mkdir()
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "v").write_text("in volume\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    return root


@pytest.fixture
def view(root: Path) -> Iterator[FsView]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        overlays = [
            Overlay("/data", str(root.parent / "vol")),
            Overlay("/ro", str(root.parent / "vol"), writable=False),
            Overlay("/etc/hosts", str(root.parent / "hosts")),
        ]
        with FsView(fd, overlays) as v:
            yield v
    finally:
        os.close(fd)


def exported(view: FsView, path: str, name: str) -> bytes:
    out = bytearray()
    export_tar(view, view.lookup(path), name, out.extend)
    return bytes(out)


def members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, m.type) for m in tf]


def raw_names(data: bytes) -> list[str]:
    """Header names as written (tarfile strips a directory's trailing slash when reading)."""
    names, offset = [], 0
    while offset + 512 <= len(data) and data[offset : offset + 512] != bytes(512):
        header = data[offset : offset + 512]
        names.append(header[:100].rstrip(b"\0").decode())
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    return names


def make_tar(*entries: tuple[str, str, str | bytes], uid: int = UID, gid: int = GID) -> bytes:
    """entries: (kind, name, data-or-linkname) with kind f(ile) d(ir) s(ymlink) h(ardlink) p(fifo)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            info.uid, info.gid, info.mtime = uid, gid, 1_000_000_000
            if kind == "f":
                data = extra.encode() if isinstance(extra, str) else extra
                info.size, info.mode = len(data), 0o640
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
            elif kind == "s":
                info.type, info.linkname = tarfile.SYMTYPE, str(extra)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(extra)
            elif kind == "p":
                info.type, info.mode = tarfile.FIFOTYPE, 0o600
            elif kind == "c":
                info.type, info.mode, info.devmajor, info.devminor = tarfile.CHRTYPE, 0o666, 1, 3
            tf.addfile(info)
    return buf.getvalue()


def extract(view: FsView, dest: str, data: bytes, **options: object) -> None:
    extract_tar(view, view.lookup(dest, follow=True), io.BytesIO(data), ExtractOptions(**options))  # type: ignore[arg-type]


# --- out ----------------------------------------------------------------------------------------


def test_directory_is_rebased_on_the_requested_name(view: FsView) -> None:
    data = exported(view, "/d", "d")
    assert raw_names(data) == ["d/", "d/f", "d/lf", "d/sub/"]
    assert members(data)[1:3] == [("d/f", tarfile.REGTYPE), ("d/lf", tarfile.SYMTYPE)]
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0
    assert raw_names(exported(view, "/ld/.", ".")) == ["./", "./f", "./lf", "./sub/"]


def test_root_entries_carry_a_leading_slash(view: FsView) -> None:
    names = raw_names(exported(view, "/", "/"))
    assert names[0] == "/"
    assert "/d/f" in names and "/data/v" in names and "/etc/hosts" in names and "/ro/v" in names


def test_file_and_link_are_single_entries(view: FsView) -> None:
    with tarfile.open(fileobj=io.BytesIO(exported(view, "/d/f", "f"))) as tf:
        (member,) = tf.getmembers()
        assert (member.name, member.size, member.uid, member.mode) == ("f", 3, UID, 0o644)
        reader = tf.extractfile(member)
        assert reader is not None and reader.read() == b"hi\n"
    assert members(exported(view, "/ld", "ld")) == [("ld", tarfile.SYMTYPE)]


def test_hard_links_fifos_and_sockets(view: FsView, root: Path) -> None:
    os.link(root / "d" / "f", root / "d" / "g")
    os.mkfifo(root / "d" / "fifo")
    import socket

    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "d" / "sock"))
        found = dict(members(exported(view, "/d", "d")))
    finally:
        sock.close()
    assert found["d/f"] == tarfile.REGTYPE and found["d/g"] == tarfile.LNKTYPE
    assert found["d/fifo"] == tarfile.FIFOTYPE
    assert "d/sock" not in found


def test_a_file_that_shrinks_while_read_keeps_its_header_size(view: FsView, root: Path) -> None:
    (root / "big").write_bytes(b"x" * 5000)
    node = view.lookup("/big")
    (root / "big").write_bytes(b"y" * 10)  # the container truncates it after the stat
    out = bytearray()
    export_tar(view, node, "big", out.extend)
    with tarfile.open(fileobj=io.BytesIO(bytes(out))) as tf:
        member = tf.getmember("big")
        reader = tf.extractfile(member)
        assert member.size == 5000 and reader is not None
        assert reader.read() == b"y" * 10 + bytes(4990)


# --- in -----------------------------------------------------------------------------------------


def test_extracts_files_dirs_and_links_with_metadata(view: FsView, root: Path) -> None:
    extract(
        view,
        "/tmp",
        make_tar(("d", "new", ""), ("f", "new/a", "A\n"), ("s", "new/l", "a"), ("p", "new/p", "")),
    )
    new = root / "tmp" / "new"
    assert (new / "a").read_text() == "A\n"
    assert os.readlink(new / "l") == "a"
    assert stat.S_ISFIFO((new / "p").lstat().st_mode)
    assert stat.S_IMODE(new.stat().st_mode) == 0o750 and new.stat().st_mtime == 1_000_000_000
    assert stat.S_IMODE((new / "a").stat().st_mode) == 0o640 and (new / "a").stat().st_mtime == 1_000_000_000


def test_absolute_names_land_in_the_extraction_directory(view: FsView, root: Path) -> None:
    extract(view, "/tmp", make_tar(("f", "/abs", "x"), ("f", "/../dotdot-rooted", "y")))
    assert (root / "tmp" / "abs").read_text() == "x"
    assert (root / "tmp" / "dotdot-rooted").read_text() == "y"


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", ".."])
def test_names_climbing_out_are_refused(view: FsView, root: Path, name: str) -> None:
    with pytest.raises(ArchiveError, match=r' is outside of "/d/sub"$'):
        extract(view, "/d/sub", make_tar(("f", name, "x")))
    assert not (root / "d" / "escape").exists()


def test_symlink_escaping_the_extraction_directory_is_refused(view: FsView, root: Path) -> None:
    with pytest.raises(ArchiveError, match=r'^invalid symlink "/d/sub/l" -> "../../etc"$'):
        extract(view, "/d/sub", make_tar(("s", "l", "../../etc")))
    assert not (root / "d" / "sub" / "l").exists()


def test_writes_through_an_archive_symlink_stay_in_the_container(view: FsView, root: Path) -> None:
    # dockerd allows an absolute target (it resolves in the container's root) and so do we.
    extract(view, "/d/sub", make_tar(("s", "l", "/tmp"), ("f", "l/through", "t")))
    assert (root / "tmp" / "through").read_text() == "t"


def test_hard_links(view: FsView, root: Path) -> None:
    with pytest.raises(ArchiveError, match=r'^invalid hardlink "/etc/passwd" -> "../../etc/passwd"$'):
        extract(view, "/d/sub", make_tar(("h", "h", "../../etc/passwd")))
    extract(view, "/d", make_tar(("h", "hf", "f")))
    assert os.path.samefile(root / "d" / "hf", root / "d" / "f")
    # An absolute link name is taken from the extraction directory, as dockerd does.
    with pytest.raises(PathError) as info:
        extract(view, "/d/sub", make_tar(("h", "h2", "/f")))
    assert info.value.errno == errno.ENOENT


def test_no_overwrite_dir_non_dir(view: FsView, root: Path) -> None:
    (root / "tmp" / "dir").mkdir()
    (root / "tmp" / "file").write_text("old")
    with pytest.raises(
        ArchiveError, match=r'^cannot overwrite directory "/tmp/dir" with non-directory "/tmp"$'
    ):
        extract(view, "/tmp", make_tar(("f", "dir", "x")), no_overwrite_dir_non_dir=True)
    with pytest.raises(
        ArchiveError, match=r'^cannot overwrite non-directory "/tmp/file" with directory "/tmp"$'
    ):
        extract(view, "/tmp", make_tar(("d", "file", "")), no_overwrite_dir_non_dir=True)
    assert (root / "tmp" / "dir").is_dir() and (root / "tmp" / "file").read_text() == "old"
    extract(view, "/tmp", make_tar(("f", "dir", "x"), ("d", "file", "")))
    assert (root / "tmp" / "dir").read_text() == "x" and (root / "tmp" / "file").is_dir()


def test_directories_merge(view: FsView, root: Path) -> None:
    extract(view, "/", make_tar(("d", "d", ""), ("f", "d/new", "n")))
    assert (root / "d" / "f").read_text() == "hi\n" and (root / "d" / "new").read_text() == "n"


def test_the_extraction_directory_cannot_become_a_file(view: FsView, root: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot overwrite directory"):
        extract(view, "/tmp", make_tar(("f", ".", "x")))
    assert (root / "tmp").is_dir()


def test_read_only_overlay_and_mount_points(view: FsView, root: Path) -> None:
    with pytest.raises(PathError) as info:
        extract(view, "/", make_tar(("f", "ro/x", "x")))
    assert str(info.value) == "open /ro/x: read-only file system"
    assert not (root.parent / "vol" / "x").exists()
    with pytest.raises(PathError) as info:
        extract(view, "/etc", make_tar(("f", "hosts", "evil")))
    assert str(info.value) == "unlinkat /etc/hosts: device or resource busy"
    assert (root.parent / "hosts").read_text() == "127.0.0.1 localhost\n"
    with pytest.raises(PathError, match="device or resource busy"):
        extract(view, "/", make_tar(("f", "etc", "a file over a directory holding a mount")))
    extract(view, "/", make_tar(("f", "data/x", "x")))
    assert (root.parent / "vol" / "x").read_text() == "x"


def test_chown_override(view: FsView, root: Path) -> None:
    extract(view, "/tmp", make_tar(("f", "owned", "x"), uid=4321, gid=1234), chown=(UID, GID))
    st = (root / "tmp" / "owned").stat()
    assert (st.st_uid, st.st_gid) == (UID, GID)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"hello\n", "unexpected EOF"), (b"x" * 1024, "archive/tar: invalid tar header")],
)
def test_broken_archives(view: FsView, data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        extract(view, "/tmp", data)
    assert str(info.value) == message


def test_file_data_spanning_read_chunks_then_more_members(view: FsView, root: Path) -> None:
    big = os.urandom(3 * (1 << 20) + 12345)  # several of the extractor's reads, not block-aligned
    extract(view, "/tmp", make_tar(("f", "big", big), ("f", "small", "after"), ("d", "dir", "")))
    assert (root / "tmp" / "big").read_bytes() == big
    assert (root / "tmp" / "small").read_text() == "after"
    assert (root / "tmp" / "dir").is_dir()


def test_member_data_cut_short(view: FsView, root: Path) -> None:
    data = make_tar(("f", "cut", b"y" * 5000))
    with pytest.raises(ArchiveError) as info:
        extract(view, "/tmp", data[: 512 * 3 + 1000])  # pax header, header, part of the data
    assert str(info.value) == "unexpected EOF"


def test_empty_body_is_an_empty_archive(view: FsView, root: Path) -> None:
    extract(view, "/tmp", b"")
    assert list((root / "tmp").iterdir()) == []


@pytest.mark.privileged
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_owners_and_device_nodes_as_root(view: FsView, root: Path) -> None:
    extract(view, "/tmp", make_tar(("f", "f", "x"), ("c", "null", ""), uid=4321, gid=1234))
    assert (root / "tmp" / "f").stat().st_uid == 4321
    st = (root / "tmp" / "null").lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and st.st_gid == 1234
    assert members(exported(view, "/tmp/null", "null")) == [("null", tarfile.CHRTYPE)]
