"""storage.archive: hostile tars never touch anything outside dest; whiteouts; metadata; export."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import errdefs
from storage.archive import apply_layer_tar, clean_name, export_tar
from storage.tests.conftest import needs_root
from storage.tests.tarutil import Entry, device, directory, file, hardlink, make_tar, symlink

State = dict[str, tuple[int, int, int, int, int, str]]


def tree_state(root: Path, skip: Path | None = None) -> State:
    state: State = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if skip is not None and (p == skip or skip in p.parents):
                continue
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            else:
                extra = ""
            state[str(p.relative_to(root))] = (
                st.st_mode,
                st.st_uid,
                st.st_nlink,
                st.st_size,
                st.st_mtime_ns,
                extra,
            )
    return state


def host_file_state(path: str) -> tuple[int, int, int, str]:
    st = os.lstat(path)
    return st.st_ino, st.st_nlink, st.st_mtime_ns, hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Sandbox:
    """dest plus an 'outside' directory with a secret; checks that outside stays untouched.

    dest sits three levels below the sandbox root and every hostile link aims at the
    sandbox, so even a regressed extractor that follows links writes only into tmp_path
    (where the check sees it), never into the host.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.dest = tmp_path / "x1" / "x2" / "dest"
        self.dest.mkdir(parents=True)
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        (self.outside / "secret").write_text("secret")
        self.outside_rel = str(self.outside).lstrip("/")  # the outside dir as seen from a -> /
        self._before = tree_state(tmp_path, skip=self.dest)
        self._passwd = host_file_state("/etc/passwd")

    def apply(self, entries: list[Entry], **kw: object) -> int:
        return apply_layer_tar(io.BytesIO(make_tar(entries)), self.dest, **kw)  # type: ignore[arg-type]

    def assert_outside_untouched(self) -> None:
        assert tree_state(self.root, skip=self.dest) == self._before
        assert host_file_state("/etc/passwd") == self._passwd


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.assert_outside_untouched()


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("./etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("//etc//x/", "etc/x"),
        ("/../../x", "x"),
        ("a/../../x", "../x"),
        ("..", ".."),
        ("./", "."),
        ("", "."),
    ],
)
def test_clean_name(name: str, cleaned: str) -> None:
    assert clean_name(name) == cleaned


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..", "./../../../outside/secret"])
def test_dotdot_escape_refused(box: Sandbox, name: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match='is outside of "/"'):
        box.apply([file("ok", b"1"), file(name, b"pwned")])


def test_absolute_names_are_made_relative(box: Sandbox) -> None:
    box.apply([file(f"/{box.outside_rel}/secret", b"x"), file(f"/../../{box.outside_rel}/new", b"y")])
    assert (box.dest / box.outside_rel / "secret").read_bytes() == b"x"
    assert (box.dest / box.outside_rel / "new").read_bytes() == b"y"


def test_symlink_to_root_then_write_through_it(box: Sandbox) -> None:
    box.apply([symlink("a", "/"), file(f"a/{box.outside_rel}/secret", b"mine")])
    assert os.readlink(box.dest / "a") == "/"
    assert (box.dest / box.outside_rel / "secret").read_bytes() == b"mine"


@pytest.mark.privileged
@needs_root
def test_symlink_to_root_then_etc_passwd(tmp_path: Path) -> None:
    # The literal attack, run where a regression cannot hurt: a private mount namespace
    # whose /etc is a throw-away copy.
    fake_etc = tmp_path / "fake-etc"
    fake_etc.mkdir()
    (fake_etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    dest = tmp_path / "dest"
    layer = tmp_path / "layer.tar"
    layer.write_bytes(make_tar([symlink("a", "/"), directory("etc"), file("a/etc/passwd", b"mine")]))
    script = (
        "import subprocess, sys, pathlib\n"
        f"subprocess.run(['mount', '--bind', {str(fake_etc)!r}, '/etc'], check=True)\n"
        "from storage.archive import apply_layer_tar\n"
        f"with open({str(layer)!r}, 'rb') as f:\n"
        f"    apply_layer_tar(f, pathlib.Path({str(dest)!r}))\n"
    )
    passwd = host_file_state("/etc/passwd")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert (fake_etc / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert host_file_state("/etc/passwd") == passwd
    assert (dest / "etc/passwd").read_bytes() == b"mine"


def test_symlink_to_outside_dir_then_file_and_dir(box: Sandbox) -> None:
    out = str(box.outside)
    box.apply(
        [symlink("a", out), file("a/secret", b"overwritten"), directory("a/sub"), file("a/sub/f", b"f")]
    )
    # Resolved inside dest, as dockerd's chroot would.
    inner = box.dest / box.outside_rel
    assert (inner / "secret").read_bytes() == b"overwritten"
    assert (inner / "sub/f").read_bytes() == b"f"


def test_relative_dotdot_symlink_chains(box: Sandbox) -> None:
    box.apply(
        [
            symlink("up", ".."),
            symlink("upup", "up/.."),
            symlink("far", "../../../outside"),
            directory("d"),
            symlink("d/back", "../.."),
            file("up/x", b"1"),
            file("upup/up/y", b"2"),
            file("far/secret", b"3"),
            file("d/back/d/back/z", b"4"),
        ]
    )
    assert (box.dest / "x").read_bytes() == b"1"
    assert (box.dest / "y").read_bytes() == b"2"
    assert (box.dest / "outside/secret").read_bytes() == b"3"
    assert (box.dest / "z").read_bytes() == b"4"


def test_symlink_then_directory_entry_through_it(box: Sandbox) -> None:
    box.apply([symlink("link", str(box.outside)), directory("link/newdir", mode=0o777)])
    assert not (box.outside / "newdir").exists()
    assert (box.dest / box.outside_rel / "newdir").is_dir()


def test_final_component_symlink_is_replaced_not_followed(box: Sandbox) -> None:
    box.apply([symlink("s", str(box.outside / "secret")), file("s", b"replaced")])
    assert not (box.dest / "s").is_symlink()
    assert (box.dest / "s").read_bytes() == b"replaced"
    box.apply([symlink("d", str(box.outside)), directory("d", mode=0o700)])
    assert (box.dest / "d").is_dir() and not (box.dest / "d").is_symlink()


def test_hardlink_to_host_file_refused(box: Sandbox) -> None:
    for target in ("/etc/passwd", str(box.outside / "secret")):
        with pytest.raises(errdefs.InvalidParameter, match="invalid hardlink"):
            box.apply([hardlink("pw", target)])
        assert not os.path.lexists(box.dest / "pw")


@pytest.mark.parametrize("target", ["../../../outside/secret", "a/../../../../outside/secret", ".."])
def test_hardlink_escape_refused(box: Sandbox, target: str) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="invalid hardlink"):
        box.apply([directory("a"), hardlink("h", target)])


def test_hardlink_through_symlinked_dir_stays_inside(box: Sandbox) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="invalid hardlink"):
        box.apply([symlink("o", str(box.outside)), hardlink("h", "o/secret")])
    assert not os.path.lexists(box.dest / "h")


def test_hardlink_to_symlink_links_the_symlink(box: Sandbox) -> None:
    box.apply([symlink("s", str(box.outside / "secret")), hardlink("h", "s")])
    assert (box.dest / "h").is_symlink()
    assert os.lstat(box.dest / "h").st_ino == os.lstat(box.dest / "s").st_ino


def test_symlink_loop_refused(box: Sandbox) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        box.apply([symlink("a", "b"), symlink("b", "a"), file("a/x", b"x")])


def test_file_under_a_file_refused(box: Sandbox) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="not a directory"):
        box.apply([file("f", b"x"), file("f/g", b"y")])


def test_device_nodes_refused_by_default(box: Sandbox) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="device node"):
        box.apply([device("dev/sda", 8, 0, char=False)])
    assert not os.path.lexists(box.dest / "dev/sda")
    with pytest.raises(errdefs.InvalidParameter, match="device node"):
        box.apply([device("mem", 1, 1)])


@needs_root
def test_device_nodes_when_allowed_and_whiteout_nodes_always(box: Sandbox) -> None:
    box.apply([device("null", 1, 3), device("wh", 0, 0)], allow_devices=True)
    st = os.lstat(box.dest / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o600
    box.apply([device("wh2", 0, 0)])  # the overlay whiteout form needs no permission
    assert os.lstat(box.dest / "wh2").st_rdev == 0


def test_fresh_dest_is_removed_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dest"
    with pytest.raises(errdefs.InvalidParameter):
        apply_layer_tar(io.BytesIO(make_tar([file("a", b"1"), file("../b", b"2")])), dest)
    assert not dest.exists()


def test_truncated_and_garbage_streams(tmp_path: Path) -> None:
    data = make_tar([file("big", os.urandom(100_000))])
    with pytest.raises(errdefs.InvalidParameter):
        apply_layer_tar(io.BytesIO(data[:5000]), tmp_path / "t1")
    with pytest.raises(errdefs.InvalidParameter):
        apply_layer_tar(io.BytesIO(b"this is not a tar archive" * 40), tmp_path / "t2")
    assert apply_layer_tar(io.BytesIO(b""), tmp_path / "t3") == 0


@needs_root
def test_metadata_preserved(tmp_path: Path) -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service, permitted
    entries = [
        directory("./", mode=0o755, mtime=1_000_000_000),
        directory("bin", mode=0o711, uid=3, gid=4, mtime=1_100_000_000),
        file("bin/ping", b"\x7fELF", mode=0o4755, uid=0, gid=0, xattrs={"security.capability": cap}),
        file("bin/owned", b"o", mode=0o640, uid=1000, gid=1001, xattrs={"user.note": b"hi"}),
        symlink("bin/sh", "busybox"),
        hardlink("bin/ping2", "bin/ping"),
        Entry("fifo", tarfile.FIFOTYPE, mode=0o620, uid=7, gid=8),
        file("overlay-attr", b"", xattrs={"trusted.overlay.redirect": b"/etc"}),
    ]
    entries[4].uid, entries[4].gid = 5, 6
    applied = apply_layer_tar(io.BytesIO(make_tar(entries)), tmp_path / "d")
    d = tmp_path / "d"
    assert applied == 5
    st = os.lstat(d / "bin")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o711, 3, 4, 1_100_000_000)
    assert os.lstat(d).st_mtime == 1_000_000_000
    st = os.lstat(d / "bin/ping")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_mtime == 1_600_000_000
    assert os.getxattr(d / "bin/ping", "security.capability") == cap
    assert st.st_ino == os.lstat(d / "bin/ping2").st_ino
    st = os.lstat(d / "bin/owned")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1000, 1001)
    assert os.getxattr(d / "bin/owned", "user.note") == b"hi"
    st = os.lstat(d / "bin/sh")
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (5, 6)
    assert os.readlink(d / "bin/sh") == "busybox"
    st = os.lstat(d / "fifo")
    assert stat.S_ISFIFO(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o620, 7, 8)
    assert "trusted.overlay.redirect" not in os.listxattr(d / "overlay-attr")


@needs_root
def test_overlay_whiteouts(tmp_path: Path) -> None:
    d = tmp_path / "upper"
    apply_layer_tar(
        io.BytesIO(
            make_tar(
                [
                    directory("etc"),
                    file("etc/.wh.motd", uid=2, gid=3),
                    directory("opt"),
                    file("opt/.wh..wh..opq"),
                    file("opt/kept", b"k"),
                    file(".wh..wh.plnk/123", b"aufs"),
                    file("later", b"x"),
                    file(".wh.later"),
                ]
            )
        ),
        d,
    )
    st = os.lstat(d / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and (st.st_uid, st.st_gid) == (2, 3)
    assert not os.path.lexists(d / "etc/.wh.motd")
    assert os.getxattr(d / "opt", "trusted.overlay.opaque") == b"y"
    assert (d / "opt/kept").read_bytes() == b"k"
    assert not os.path.lexists(d / ".wh..wh.plnk")
    assert os.lstat(d / "later").st_rdev == 0 and stat.S_ISCHR(os.lstat(d / "later").st_mode)


def test_whiteouts_none_mode_extracts_literally(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    apply_layer_tar(
        io.BytesIO(make_tar([file(".wh.x", b"1"), file("dir/.wh..wh..opq")])), d, whiteouts="none"
    )
    assert (d / ".wh.x").read_bytes() == b"1"
    assert (d / "dir/.wh..wh..opq").exists()


def test_whiteout_with_bad_name_refused(tmp_path: Path) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        apply_layer_tar(io.BytesIO(make_tar([file("a/.wh..")])), tmp_path / "d")


@needs_root
def test_implied_directories_copy_parent_layer_metadata(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "usr/lib").mkdir(parents=True)
    os.chown(lower / "usr", 5, 6)
    os.chmod(lower / "usr", 0o750)
    upper = tmp_path / "upper"
    apply_layer_tar(
        io.BytesIO(make_tar([file("usr/lib/x", b"x"), file("new/y", b"y")])), upper, parents=[lower]
    )
    st = os.lstat(upper / "usr")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 5, 6)
    assert stat.S_IMODE(os.lstat(upper / "new").st_mode) == 0o755


def test_replacing_directory_with_file_and_back(tmp_path: Path) -> None:
    d = tmp_path / "d"
    apply_layer_tar(
        io.BytesIO(
            make_tar([directory("x"), file("x/inner", b"i"), file("x", b"now a file"), directory("y")])
        ),
        d,
    )
    assert (d / "x").read_bytes() == b"now a file"
    apply_layer_tar(io.BytesIO(make_tar([file("y", b"f"), directory("x", mode=0o700)])), d)
    assert (d / "y").read_bytes() == b"f"
    assert (d / "x").is_dir()


def export(src: Path, upper: bool = False) -> bytes:
    buf = io.BytesIO()
    export_tar(src, buf, upper=upper)
    return buf.getvalue()


def test_export_roundtrip_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    entries = [
        directory("b", mode=0o750, mtime=1_500_000_000),
        file("b/f", b"data", mode=0o640, mtime=1_500_000_001),
        hardlink("b/f2", "b/f"),
        symlink("a-link", "b/f"),
        file("c", os.urandom(3000)),
    ]
    apply_layer_tar(io.BytesIO(make_tar(entries)), src)
    first = export(src)
    assert first == export(src)
    with tarfile.open(fileobj=io.BytesIO(first)) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["a-link", "b", "b/f", "b/f2", "c"]
    assert [m.type for m in members] == [
        tarfile.SYMTYPE,
        tarfile.DIRTYPE,
        tarfile.REGTYPE,
        tarfile.LNKTYPE,
        tarfile.REGTYPE,
    ]
    assert all(m.uname == "" and m.gname == "" for m in members)
    copy = tmp_path / "copy"
    apply_layer_tar(io.BytesIO(first), copy)
    assert tree_state(copy) == tree_state(src)


@needs_root
def test_export_upper_converts_whiteouts_back(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    layer = make_tar(
        [
            directory("etc"),
            file("etc/.wh.motd"),
            directory("opt"),
            file("opt/.wh..wh..opq"),
            file("opt/new", b"n"),
        ]
    )
    apply_layer_tar(io.BytesIO(layer), upper)
    with tarfile.open(fileobj=io.BytesIO(export(upper, upper=True))) as tf:
        got = {m.name: m for m in tf.getmembers()}
    assert sorted(got) == ["etc", "etc/.wh.motd", "opt", "opt/.wh..wh..opq", "opt/new"]
    assert got["etc/.wh.motd"].isreg() and got["etc/.wh.motd"].size == 0
    # Without upper=True the whiteout stays a device node.
    with tarfile.open(fileobj=io.BytesIO(export(upper))) as tf:
        raw = {m.name: m for m in tf.getmembers()}
    assert raw["etc/motd"].ischr() and "opt/.wh..wh..opq" not in raw


def test_export_exclude_leaves_out_paths_and_their_subtrees(tmp_path: Path) -> None:
    src = tmp_path / "src"
    entries = [
        directory("etc"),
        file("etc/hostname"),
        file("etc/keep", b"k"),
        directory("proc"),
        file("proc/inner"),
        file("x", b"x"),
    ]
    apply_layer_tar(io.BytesIO(make_tar(entries)), src)
    buf = io.BytesIO()
    export_tar(src, buf, exclude={"etc/hostname", "proc"})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert tf.getnames() == ["etc", "etc/keep", "x"]
