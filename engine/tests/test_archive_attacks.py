"""docker cp against a hostile container: planted and swapped symlinks, loops, and hostile archives.

A real overlay snapshot is the container's file system, used as a running container (mounted at
its bundle's rootfs) and as a stopped one (the archive code mounts it itself). Beside it a "host"
directory plays the host: each test fingerprints it before and after and asserts that not a byte,
mode or time changed, and that a canary name never appears in the real /, /tmp or /etc.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from engine import errdefs
from engine.containers.archive import ContainerArchive
from engine.containers.model import Container
from runtime.bundle import Bundle
from storage.mount import mount_all, unmount
from storage.snapshots import OverlaySnapshotter

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)"),
]

CID = "a" * 64
CANARY = f"skiff-cp-canary-{secrets.token_hex(4)}"
SECRET = b"host secret\n"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


class Box:
    """A container (running or stopped) on a real overlay, plus the host directory beside it."""

    def __init__(self, tmp: Path, running: bool) -> None:
        self.tmp = tmp
        self.running = running
        self.host = tmp / "host"
        (self.host / "etc").mkdir(parents=True)
        (self.host / "secret").write_bytes(SECRET)
        (self.host / "etc" / "passwd").write_bytes(b"host-root:x:0:0::/:/bin/sh\n")
        self.snapshotter = OverlaySnapshotter(tmp / "overlay")
        self.snapshotter.prepare("base-active", None)
        base = self.snapshotter.upperdir("base-active")
        for d in ("bin", "etc", "tmp", "data"):
            (base / d).mkdir()
        (base / "etc" / "passwd").write_bytes(b"container-root:x:0:0::/:/bin/sh\n")
        self.snapshotter.commit("base", "base-active")
        self.snapshotter.prepare("ctr", "base")
        self.bundles = tmp / "exec" / "bundles"
        self.rootfs = self.bundles / CID / "rootfs"
        self.live: dict[str, Any] = {}
        if running:
            self.rootfs.mkdir(parents=True)
            mount_all(self.snapshotter.mounts("ctr"), self.rootfs)
            self.live[CID] = object()
        self.c = Container(
            id=CID,
            name="/box",
            created="",
            image_id="sha256:" + "b" * 64,
            path="sh",
            args=[],
            config={},
            host_config={},
            snapshot_key="ctr",
        )
        self.layers = SimpleNamespace(snapshotter=self.snapshotter)
        # The volume "mount"/"unmount" events around each view; this box has no volumes.
        self.mounts = SimpleNamespace(announce_view=lambda c: None, announce_view_closed=lambda c: None)
        self._lock = asyncio.Lock()
        self.archive = ContainerArchive(cast(Any, self))

    # what ContainerArchive uses of ContainerService
    def bundle(self, cid: str) -> Bundle:
        return Bundle(self.bundles / cid)

    def get(self, ref: str) -> Container:
        if ref != "box":
            raise errdefs.no_such_container(ref)
        return self.c

    def lock(self, cid: str) -> asyncio.Lock:
        return self._lock

    def publish(self, c: Container, action: str, extra: dict[str, str] | None = None) -> None:
        pass

    def close(self) -> None:
        if self.running:
            unmount(self.rootfs)

    # the container's own doing
    def inside(self, path: str) -> Path:
        """Where the container writes ``path``: its mounted root, or its upper layer when stopped."""
        base = self.rootfs if self.running else self.snapshotter.upperdir("ctr")
        return base / path.lstrip("/")

    def plant_link(self, path: str, target: str) -> None:
        where = self.inside(path)
        if where.is_dir() and not where.is_symlink():
            shutil.rmtree(where)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(target)

    def merged(self, path: str) -> Path | None:
        """``path`` as the container sees it now (running: its rootfs; stopped: upper, then lower)."""
        if self.running:
            return self.rootfs / path.lstrip("/")
        for layer in (self.snapshotter.upperdir("ctr"), *self.snapshotter.lowerdirs("ctr")):
            candidate = layer / path.lstrip("/")
            if os.path.lexists(candidate):
                return candidate
        return None


def fingerprint(root: Path) -> list[tuple[str, str, str, int, int]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what, data = "link", os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what, data = "file", hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what, data = "dir", ""
            found.append((str(path.relative_to(root)), what, data, st.st_mode, st.st_mtime_ns))
    return sorted(found)


@pytest.fixture(params=["running", "stopped"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path, running=request.param == "running")
    before = fingerprint(made.host)
    try:
        yield made
    finally:
        made.close()
    assert fingerprint(made.host) == before, "the host directory changed"
    for real in ("/", "/tmp", "/etc"):
        assert not os.path.lexists(os.path.join(real, CANARY)), f"{real}/{CANARY} appeared on the host"


@pytest.fixture
def running_box(tmp_path: Path) -> Iterator[Box]:
    made = Box(tmp_path, running=True)
    before = fingerprint(made.host)
    try:
        yield made
    finally:
        made.close()
    assert fingerprint(made.host) == before, "the host directory changed"


def tar_of(*entries: tuple[str, str, str]) -> bytes:
    """(kind, name, data-or-link): f(ile), d(ir), s(ymlink), h(ardlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, extra in entries:
            info = tarfile.TarInfo(name)
            if kind == "f":
                info.size = len(extra.encode())
                tf.addfile(info, io.BytesIO(extra.encode()))
                continue
            info.type = {"d": tarfile.DIRTYPE, "s": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
            info.linkname = extra
            tf.addfile(info)
    return buf.getvalue()


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


def put(box: Box, path: str, data: bytes) -> None:
    run(box.archive.put("box", path, body(data)))


def get(box: Box, path: str) -> tuple[Any, bytes]:
    async def fetch() -> tuple[Any, bytes]:
        stat_, stream = await box.archive.get("box", path)
        return stat_, b"".join([chunk async for chunk in stream])

    return cast(tuple[Any, bytes], run(fetch()))


def contents(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            reader = tf.extractfile(m) if m.isreg() else None
            out[m.name] = reader.read() if reader else m.linkname.encode()
    return out


# --- planted links ------------------------------------------------------------------------------


def test_links_to_the_host_root_resolve_in_the_container(box: Box) -> None:
    box.plant_link("/x", "/")
    box.plant_link("/up", "../../../../../../../../../..")
    box.plant_link("/hostdir", str(box.host))
    for path in ("/x/etc/passwd", "/up/etc/passwd", "/x/x/up/etc/passwd"):
        assert contents(get(box, path)[1]) == {"passwd": b"container-root:x:0:0::/:/bin/sh\n"}
    with pytest.raises(errdefs.NotFound):
        run(box.archive.stat("box", "/hostdir/secret"))
    with pytest.raises(errdefs.NotFound):
        get(box, "/hostdir/secret")
    assert contents(get(box, "/hostdir")[1]) == {"hostdir": str(box.host).encode()}  # the link itself
    assert SECRET not in get(box, "/x/")[1]

    put(box, "/x/tmp", tar_of(("f", CANARY, "planted")))
    put(box, "/up", tar_of(("f", CANARY, "planted")))
    with pytest.raises(errdefs.NotFound):
        put(box, "/hostdir", tar_of(("f", CANARY, "planted")))
    assert (box.merged(f"/tmp/{CANARY}") or Path("/nonexistent")).read_bytes() == b"planted"
    assert (box.merged(f"/{CANARY}") or Path("/nonexistent")).read_bytes() == b"planted"


def test_etc_pointing_at_the_host_etc(box: Box) -> None:
    box.plant_link("/etc", str(box.host / "etc"))
    with pytest.raises(errdefs.NotFound):
        run(box.archive.stat("box", "/etc/passwd"))
    with pytest.raises(errdefs.NotFound):
        put(box, "/etc", tar_of(("f", "passwd", "pwned")))
    # Writing *through* the link from "/" makes the directories inside the container, as dockerd's
    # chroot'ed MkdirAll would; the host's etc is never touched.
    put(box, "/", tar_of(("f", f"etc/{CANARY}", "x")))
    assert (box.merged(f"{box.host}/etc/{CANARY}") or Path("/nonexistent")).read_bytes() == b"x"


def test_link_loops_fail_without_side_effects(box: Box) -> None:
    box.plant_link("/loop1", "/loop2")
    box.plant_link("/loop2", "/loop1")
    box.plant_link("/self", "self/x")
    for path in ("/loop1", "/loop1/x", "/self", "/self/x"):
        with pytest.raises(errdefs.Internal, match="too many"):
            if path.endswith("x"):
                get(box, path)
            else:
                run(box.archive.stat("box", path))
        with pytest.raises(errdefs.Internal, match="too many levels of symbolic links"):
            put(box, path, tar_of(("f", CANARY, "x")))


# --- a link swapped while the copy runs ----------------------------------------------------------


def test_swapped_links_never_reach_the_host(running_box: Box) -> None:
    box = running_box
    race = box.inside("/race")
    race.mkdir()
    (race / "secret").write_bytes(b"container\n")
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        targets = [str(box.host), "/", "../../../../../../../../.." + str(box.host)]
        while not stop.is_set():
            target = targets[swaps % len(targets)]
            os.rename(race, box.inside("/race.real"))
            os.symlink(target, race)
            file = box.inside("/race.real/secret")
            os.rename(file, box.inside("/race.real/secret.real"))
            if swaps % 2:
                os.symlink(str(box.host / "secret"), file)
            else:
                os.mkfifo(file)
            time.sleep(0.0005)
            os.unlink(file)
            os.rename(box.inside("/race.real/secret.real"), file)
            os.unlink(race)
            os.rename(box.inside("/race.real"), race)
            swaps += 1

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    seen: set[str] = set()
    deadline = time.monotonic() + 8
    try:
        for i in range(150):
            if time.monotonic() > deadline:
                break
            with contextlib.suppress(errdefs.NotFound, errdefs.Internal):
                found = contents(get(box, "/race/secret")[1])
                assert SECRET not in found.values()
                seen.add("get")
            with contextlib.suppress(errdefs.NotFound, errdefs.Internal, errdefs.InvalidParameter):
                assert SECRET not in get(box, "/race/")[1]
            with contextlib.suppress(errdefs.NotFound, errdefs.Internal, errdefs.InvalidParameter):
                put(box, "/race", tar_of(("f", f"{CANARY}-{i}", "planted")))
                seen.add("put")
    finally:
        stop.set()
        thread.join(10)
    assert swaps > 10, "the swapper never ran"
    assert "get" in seen and "put" in seen, seen
    assert not any(p.name.startswith(CANARY) for p in box.host.rglob("*"))


# --- hostile archives ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ([("f", "../" + CANARY, "x")], "is outside of"),
        ([("f", "a/../../../" + CANARY, "x")], "is outside of"),
        ([("s", "l", "../../../../../../../.."), ("f", f"l/{CANARY}", "x")], "invalid symlink"),
        ([("h", "h", "../../../../../../host/secret")], "invalid hardlink"),
    ],
)
def test_archives_climbing_out_are_refused(box: Box, entries: list[tuple[str, str, str]], error: str) -> None:
    with pytest.raises(errdefs.Internal, match=error):
        put(box, "/tmp", tar_of(*entries))
    assert box.merged(f"/{CANARY}") is None or not os.path.lexists(box.merged(f"/{CANARY}") or "")


def test_absolute_names_and_written_through_links_stay_inside(box: Box) -> None:
    host = str(box.host)
    put(box, "/tmp", tar_of(("f", f"{host}/{CANARY}", "abs")))
    assert (box.merged(f"/tmp{host}/{CANARY}") or Path("/nonexistent")).read_bytes() == b"abs"
    put(box, "/tmp", tar_of(("s", "l", host), ("f", f"l/{CANARY}", "through")))
    assert (box.merged(f"{host}/{CANARY}") or Path("/nonexistent")).read_bytes() == b"through"
    put(box, "/tmp", tar_of(("s", "root", "/"), ("f", f"root/etc/{CANARY}", "etc")))
    assert (box.merged(f"/etc/{CANARY}") or Path("/nonexistent")).read_bytes() == b"etc"


def test_hard_links_cannot_reach_host_files(box: Box) -> None:
    box.plant_link("/lnk", str(box.host))
    with pytest.raises(errdefs.NotFound):  # resolved from the extraction dir, inside the container
        put(box, "/tmp", tar_of(("h", "h1", str(box.host / "secret"))))
    with pytest.raises(errdefs.NotFound):  # through a planted link: still the container's tree
        put(box, "/", tar_of(("h", "h2", "lnk/secret")))
    assert box.merged("/h2") is None or not os.path.lexists(box.merged("/h2") or "")
    assert os.stat(box.host / "secret").st_nlink == 1
