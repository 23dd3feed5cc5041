"""docker cp archives over an FsView: the tar GET sends, and PUT's extraction with dockerd's rules.

Everything happens under tmp_path with the caller's own uid (device nodes need root and are
marked privileged).
"""

from __future__ import annotations

import errno
import io
import os
import random
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

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


def test_existing_entries_are_replaced_and_symlinks_never_followed(view: FsView, root: Path) -> None:
    # The extractor tries an exclusive create first; whatever is already there takes the slow path.
    (root / "tmp" / "old").write_text("old")
    (root / "tmp" / "link").symlink_to("../d/f")
    (root / "tmp" / "abs").symlink_to("/d/f")
    extract(view, "/tmp", make_tar(("f", "old", "new"), ("f", "link", "L"), ("f", "abs", "A")))
    assert (root / "tmp" / "old").read_text() == "new"
    for name, data in (("link", "L"), ("abs", "A")):
        assert not (root / "tmp" / name).is_symlink() and (root / "tmp" / name).read_text() == data
    assert (root / "d" / "f").read_text() == "hi\n"
    st = (root / "tmp" / "old").stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == 1_000_000_000


class _Trickle(io.RawIOBase):
    """A stream handing out a few bytes per read (and ``read1``), as a slow upload does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        n = self.step if size < 0 else min(self.step, size)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        out = self.read1(len(buffer))
        buffer[: len(out)] = out
        return len(out)


class _ReadOnly:
    """A stream with nothing but ``read`` (a raw file, a decompressor without ``read1``)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.inner.read(min(size, 777) if size >= 0 else size)


@pytest.mark.parametrize("step", [1, 7, 511, 513, 4096])
def test_headers_and_data_split_anywhere_across_stream_chunks(view: FsView, root: Path, step: int) -> None:
    big = os.urandom(20_000)
    data = make_tar(("d", "t", ""), ("f", "t/a", big), ("f", "t/b", ""), ("s", "t/l", "a"), ("f", "t/c", "c"))
    extract_tar(view, view.lookup("/tmp"), cast(BinaryIO, _Trickle(data, step)), ExtractOptions())
    assert (root / "tmp" / "t" / "a").read_bytes() == big
    assert (root / "tmp" / "t" / "b").read_bytes() == b""
    assert os.readlink(root / "tmp" / "t" / "l") == "a"
    assert (root / "tmp" / "t" / "c").read_text() == "c"


def test_a_stream_with_only_read(view: FsView, root: Path) -> None:
    big = os.urandom(5000)
    data = make_tar(("f", "r", big), ("f", "s", "s"))
    extract_tar(view, view.lookup("/tmp"), cast(BinaryIO, _ReadOnly(data)), ExtractOptions())
    assert (root / "tmp" / "r").read_bytes() == big and (root / "tmp" / "s").read_text() == "s"
    with pytest.raises(ArchiveError) as info:
        extract_tar(view, view.lookup("/d"), cast(BinaryIO, _ReadOnly(data[:1500])), ExtractOptions())
    assert str(info.value) == "unexpected EOF"


# --- the header fast path against tarfile's own parser --------------------------------------------


def _header(info: tarfile.TarInfo, fmt: Literal[0, 1, 2] = tarfile.USTAR_FORMAT) -> bytes:
    return info.tobuf(fmt, "utf-8", "surrogateescape")[-512:]


def _with_checksum(block: bytearray, *, signed: bool = False) -> bytes:
    block[148:156] = b" " * 8
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    block[148:156] = b"%06o\0 " % (total & 0o7777777)
    return bytes(block)


def _parsed(parse: Any, block: bytes) -> tuple[str, object]:
    try:
        info = parse(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        return ("error", (type(e), str(e)))
    keys = [
        "name",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime",
        "chksum",
        "type",
        "linkname",
        "uname",
        "gname",
        "devmajor",
        "devminor",
    ]
    return ("ok", {k: getattr(info, k) for k in keys})


def _sample_headers() -> list[bytes]:
    blocks = []
    for kind in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE):
        info = tarfile.TarInfo("some/dir/entry" + ("/" if kind == tarfile.DIRTYPE else ""))
        info.type, info.mode, info.uid, info.gid = kind, 0o4755, 1000, 100
        info.size = 12345 if kind == tarfile.REGTYPE else 0
        info.mtime, info.linkname, info.uname, info.gname = 1_600_000_000, "tgt", "u", "g"
        blocks.append(_header(info))
    dev = tarfile.TarInfo("dev/null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    blocks.append(_header(dev))
    long = tarfile.TarInfo("p" * 120 + "/" + "n" * 90)  # ustar splits it: name plus prefix
    blocks.append(_header(long))
    blocks.append(_header(tarfile.TarInfo("gnu"), tarfile.GNU_FORMAT))
    v7 = bytearray(_header(tarfile.TarInfo("v7dir/")))
    v7[156:157] = tarfile.AREGTYPE
    blocks.append(_with_checksum(v7))
    high = bytearray(_header(tarfile.TarInfo("x")))
    high[0:4] = "é".encode() + b"\xff\xfe"  # undecodable bytes; and only the signed sum matches
    blocks.append(_with_checksum(high, signed=True))
    b256 = bytearray(_header(tarfile.TarInfo("big-uid")))
    b256[108:116] = b"\x80" + (70000).to_bytes(7, "big")
    blocks.append(_with_checksum(b256))
    for field, junk in (
        ((100, 108), b"0000 9x\0"),
        ((124, 136), b"\x1c777\0       "),
        ((108, 116), b"  -17 \0\0"),
    ):
        odd = bytearray(_header(tarfile.TarInfo("odd")))
        odd[field[0] : field[1]] = junk
        blocks.append(_with_checksum(odd))
    bad = bytearray(_header(tarfile.TarInfo("bad-sum")))
    bad[0] ^= 1
    blocks.append(bytes(bad))
    return blocks


def test_fast_header_parsing_gives_what_tarfile_gives() -> None:
    from storage.fscopy import _TarInfo

    samples = _sample_headers()
    rng = random.Random(5)
    for block in list(samples):  # and damaged copies of each, checksum fixed up or not
        for _ in range(60):
            mutated = bytearray(block)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(512)] = rng.choice([0, 0x20, 0x30, 0x37, 0x38, 0x41, 0x80, 0xFF])
            samples.append(_with_checksum(mutated) if rng.random() < 0.8 else bytes(mutated))
    fast = 0
    for block in samples:
        assert _parsed(_TarInfo.frombuf, block) == _parsed(tarfile.TarInfo.frombuf, block), block
        fast += block[156:157] in (b"0", b"5") and _parsed(tarfile.TarInfo.frombuf, block)[0] == "ok"
    assert fast > 50  # the comparison covered the fast path, not only tarfile's fallback


def test_a_failed_create_reports_what_the_lookup_meets(view: FsView, root: Path) -> None:
    # The exclusive create is only a shortcut: its failure falls back to lstat-then-create.
    name = "n" * 300
    with pytest.raises(PathError) as info:
        extract(view, "/tmp", make_tar(("f", name, "x")))
    assert str(info.value) == f"lstat /tmp/{name}: file name too long"
