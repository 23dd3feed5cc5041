"""FsView path resolution (symlinks in scope, "..", overlays) and the Go conventions it exposes.

Plain directories and symlinks under tmp_path: no root needed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.fsroot import (
    MODE_CHAR_DEVICE,
    MODE_DEVICE,
    MODE_DIR,
    MODE_NAMED_PIPE,
    MODE_SETGID,
    MODE_SETUID,
    MODE_SOCKET,
    MODE_STICKY,
    MODE_SYMLINK,
    ArchiveError,
    FsView,
    Overlay,
    go_base,
    go_clean,
    go_file_mode,
    go_join,
    go_strerror,
    preserve_trailing,
    rfc3339_nano,
)

# --- Go conventions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [
        ("", "."),
        ("/", "/"),
        ("//a//b/", "/a/b"),
        ("/../x", "/x"),
        ("a/../../x", "../x"),
        ("..", ".."),
        ("./a/./b/.", "a/b"),
        ("/d/..", "/"),
    ],
)
def test_go_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


@pytest.mark.parametrize(
    ("path", "base"),
    [("", "."), ("/", "/"), ("///", "/"), ("/d/", "d"), ("/d/.", "."), ("/d/..", ".."), ("f", "f")],
)
def test_go_base(path: str, base: str) -> None:
    assert go_base(path) == base


def test_go_join_does_not_restart_at_an_absolute_part() -> None:
    assert go_join("/up/sub", "/etc") == "/up/sub/etc"
    assert go_join("/", "a/../b") == "/b"
    assert go_join("/", "") == "/"


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("/d", "/d"),
        ("/d/", "/d/"),
        ("/d/.", "/d/."),
        ("/.", "/."),
        ("/d/..", "/"),
        ("/d//", "/d/"),
        ("/", "/"),
    ],
)
def test_preserve_trailing_dot_or_separator(original: str, expected: str) -> None:
    assert preserve_trailing(go_join("/", original), original) == expected


@pytest.mark.parametrize(
    ("st_mode", "go_mode"),
    [
        (stat.S_IFDIR | 0o755, MODE_DIR | 0o755),  # 2147484141, what dockerd sends for a 0755 dir
        (stat.S_IFREG | 0o644, 0o644),
        (stat.S_IFLNK | 0o777, MODE_SYMLINK | 0o777),  # 134218239
        (stat.S_IFIFO | 0o644, MODE_NAMED_PIPE | 0o644),  # 33554852
        (stat.S_IFSOCK | 0o755, MODE_SOCKET | 0o755),
        (stat.S_IFCHR | 0o666, MODE_DEVICE | MODE_CHAR_DEVICE | 0o666),
        (stat.S_IFBLK | 0o660, MODE_DEVICE | 0o660),
        (stat.S_IFREG | stat.S_ISUID | stat.S_ISGID | 0o755, MODE_SETUID | MODE_SETGID | 0o755),
        (stat.S_IFDIR | stat.S_ISVTX | 0o777, MODE_DIR | MODE_STICKY | 0o777),
    ],
)
def test_go_file_mode(st_mode: int, go_mode: int) -> None:
    assert go_file_mode(st_mode) == go_mode


def test_mode_constants_are_gos() -> None:
    assert (MODE_DIR, MODE_SYMLINK, MODE_NAMED_PIPE) == (1 << 31, 1 << 27, 1 << 25)
    assert go_file_mode(stat.S_IFDIR | 0o755) == 2147484141
    assert go_file_mode(stat.S_IFLNK | 0o777) == 134218239


def test_rfc3339_nano_trims_like_go() -> None:
    assert rfc3339_nano(1_700_000_000 * 10**9) == "2023-11-14T22:13:20Z"
    assert rfc3339_nano(1_700_000_000 * 10**9 + 402_896_998) == "2023-11-14T22:13:20.402896998Z"
    assert rfc3339_nano(1_700_000_000 * 10**9 + 500_000_000) == "2023-11-14T22:13:20.5Z"


def test_go_strerror() -> None:
    assert go_strerror(errno.ENOENT) == "no such file or directory"
    assert go_strerror(errno.ELOOP) == "too many levels of symbolic links"


# --- the view ---------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A container root and, beside it, host things it must never reach."""
    root = tmp_path / "root"
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "f").write_text("in the container\n")
    (root / "d" / "lf").symlink_to("f")
    (root / "ld").symlink_to("/d")
    (root / "x").symlink_to("/")
    (root / "up").symlink_to("../../../../..")
    (root / "broken").symlink_to("/nonexist/deeper")
    (root / "loop1").symlink_to("/loop2")
    (root / "loop2").symlink_to("/loop1")
    (root / "hostpath").symlink_to(str(tmp_path / "host"))
    (root / "etc").mkdir()
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "f").write_text("host secret\n")
    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "inside").write_text("volume\n")
    (tmp_path / "vol" / "back").symlink_to("../d")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    return root


@pytest.fixture
def view(tree: Path) -> Iterator[FsView]:
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        overlays = [
            Overlay("/data", str(tree.parent / "vol")),
            Overlay("/etc/hosts", str(tree.parent / "hosts")),
            Overlay("/ro", str(tree.parent / "vol"), writable=False),
        ]
        with FsView(fd, overlays) as v:
            yield v
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("path", "follow", "resolved"),
    [
        ("/d/f", False, "/d/f"),
        ("d/f", False, "/d/f"),
        ("/ld", False, "/ld"),
        ("/ld", True, "/d"),
        ("/ld/", False, "/d"),
        ("/ld/.", False, "/d"),
        ("/ld/f", False, "/d/f"),
        ("/ld/..", False, "/"),
        ("/x/x/x/d", False, "/d"),
        ("/up/d/f", False, "/d/f"),  # ".." stops at the root
        ("/../../d", False, "/d"),
        ("/d/lf", True, "/d/f"),
        ("/data/inside", False, "/data/inside"),
        ("/data/back/f", False, "/d/f"),  # ".." out of an overlay: back where it is mounted
        ("/data/../d", False, "/d"),
        ("/etc/hosts", False, "/etc/hosts"),
    ],
)
def test_lookup_resolves_inside_the_view(view: FsView, path: str, follow: bool, resolved: str) -> None:
    assert view.lookup(path, follow=follow).path == resolved


def test_absolute_link_to_a_host_path_stays_inside(view: FsView, tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        view.lookup("/hostpath/f")
    assert view.read_file("/hostpath/f") is None
    assert view.read_file("/x/d/f") == b"in the container\n"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/nope", errno.ENOENT),
        ("/broken/", errno.ENOENT),
        ("/d/f/", errno.ENOTDIR),
        ("/d/f/x", errno.ENOTDIR),
        ("/d/f/..", errno.ENOTDIR),
        ("/loop1/x", errno.ELOOP),
        ("/etc/hosts/x", errno.ENOTDIR),
    ],
)
def test_lookup_errors_are_the_kernels(view: FsView, path: str, code: int) -> None:
    with pytest.raises(OSError) as info:
        view.lookup(path)
    assert info.value.errno == code


def test_lookup_of_a_link_itself(view: FsView) -> None:
    node = view.lookup("/broken")
    assert node.is_link
    assert view.readlink(node) == "/nonexist/deeper"
    assert view.lookup("/loop1").is_link  # lstat of a loop's first link is fine


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/ld", "/d"),
        ("/d/lf", "/d/f"),
        ("/broken", "/nonexist/deeper"),
        ("/x", "/"),
        ("/x/nope/../d", "/d"),
        ("/data/back", "/d"),
        ("/hostpath", None),
    ],
)
def test_canonical_is_follow_symlink_in_scope(
    view: FsView, tree: Path, path: str, canonical: str | None
) -> None:
    if canonical is None:  # an absolute host path is kept as a path *inside* the view
        canonical = str(tree.parent / "host")
    assert view.canonical(path) == canonical


def test_canonical_loop_is_dockerds_error(view: FsView) -> None:
    with pytest.raises(ArchiveError, match=r"^evalSymlinksInScope: too many links in /loop1$"):
        view.canonical("/loop1")


def test_overlays_are_listed_where_they_are_mounted(view: FsView) -> None:
    root = view.lookup("/")
    names = view.names(root)
    assert "data" in names and "ro" in names and "x" in names
    assert view.names(view.lookup("/etc")) == ["hosts"]
    assert view.lookup("/etc/hosts").overlay is not None
    assert view.read_file("/etc/hosts") == b"127.0.0.1 localhost\n"
    found = view.overlay_for("/data/a/b")
    assert found is not None and found.destination == "/data"
    assert view.overlay_for("/d") is None
    assert view.lookup("/ro/inside").writable is False
    assert view.lookup("/data/inside").writable is True


def test_overlay_destination_is_resolved_through_links(tree: Path) -> None:
    # runc mounts on the resolved target: a volume at /var/run/x with /var/run -> /run.
    (tree / "run").mkdir()
    (tree / "var").mkdir()
    (tree / "var" / "run").symlink_to("/run")
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with FsView(fd, [Overlay("/var/run/x", str(tree.parent / "vol"))]) as v:
            assert v.overlay_at("/run/x") is not None
            assert v.read_file("/var/run/x/inside") == b"volume\n"
            assert v.read_file("/run/x/inside") == b"volume\n"
    finally:
        os.close(fd)


def test_create_makes_missing_directories_in_scope(view: FsView, tree: Path) -> None:
    node = view.walk(view.root, "/x/new/deeper", follow=False, create=(0o755, os.getuid(), os.getgid()))
    assert node.path == "/new/deeper"
    assert (tree / "new" / "deeper").is_dir()
    assert stat.S_IMODE((tree / "new").stat().st_mode) == 0o755
    with pytest.raises(OSError) as info:
        view.walk(view.root, "/ro/a/b", follow=False, create=(0o755, 0, 0))
    assert info.value.errno == errno.EROFS


def test_open_regular_refuses_anything_else(view: FsView, tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    node = view.lookup("/fifo")
    with pytest.raises(OSError) as info:
        view.open_regular(node)
    assert info.value.errno == errno.EINVAL
    assert view.read_file("/fifo") is None  # never blocks on the fifo
