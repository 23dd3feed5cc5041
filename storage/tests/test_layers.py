"""LayerStore: diff ids over any compression, OCI chain ids, idempotence, unwinding, overlay view."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from engine import errdefs
from storage.content import ContentStore
from storage.layers import LayerStore, LayerStream, chain_id, chain_ids
from storage.snapshots import OverlaySnapshotter
from storage.tests.conftest import MountTracker, needs_root
from storage.tests.tarutil import directory, file, make_tar, symlink

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> LayerStore:
    return LayerStore(ContentStore(tmp_path / "content"), OverlaySnapshotter(tmp_path / "overlay"))


def test_chain_id_follows_the_oci_spec() -> None:
    assert chain_id(None, D1) == D1
    c2 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {D3}".encode()).hexdigest()
    assert chain_id(D1, D2) == c2
    assert chain_ids([D1, D2, D3]) == [D1, c2, c3]
    assert LayerStore.chain_id([D1, D2, D3]) == c3
    with pytest.raises(errdefs.InvalidParameter):
        LayerStore.chain_id([])
    with pytest.raises(errdefs.InvalidParameter):
        chain_id(None, "sha256:short")


def test_chain_id_known_value() -> None:
    # Computed outside Python: printf 'sha256:1..1 sha256:2..2' | sha256sum
    assert chain_id(D1, D2) == "sha256:9932074217c35353d2e03a3f5a86549f7c67bfeb0ba53e23d69f4d4c8f7958f5"


LAYER = make_tar([directory("etc"), file("etc/hostname", b"skiff\n"), symlink("bin", "usr/bin")])


@pytest.mark.parametrize(
    "blob",
    [
        LAYER,
        gzip.compress(LAYER),
        zstandard.ZstdCompressor().compress(LAYER),
        # Two concatenated gzip members, as pigz/multi-stream writers produce.
        gzip.compress(LAYER[:2048]) + gzip.compress(LAYER[2048:]),
        zstandard.ZstdCompressor().compress(LAYER[:1000]) + zstandard.ZstdCompressor().compress(LAYER[1000:]),
    ],
    ids=["plain", "gzip", "zstd", "gzip-multistream", "zstd-multiframe"],
)
def test_diff_id_is_independent_of_compression(tmp_path: Path, blob: bytes) -> None:
    store = LayerStore(ContentStore(tmp_path / "c"), OverlaySnapshotter(tmp_path / "o"))
    applied = store.apply(None, io.BytesIO(blob))
    assert applied.diff_id == sha(LAYER)
    assert applied.chain_id == applied.diff_id
    assert applied.size == len(b"skiff\n") + len("usr/bin")
    assert store.has(applied.chain_id)
    assert store.size(applied.chain_id) == applied.size
    assert store.diff_id(applied.chain_id) == applied.diff_id
    fs = store.snapshotter.upperdir(applied.chain_id)
    assert (fs / "etc/hostname").read_bytes() == b"skiff\n"


@pytest.mark.parametrize("compress", [bytes, gzip.compress], ids=["plain", "gzip"])
def test_apply_takes_the_callers_layer_stream(store: LayerStore, compress: Callable[[bytes], bytes]) -> None:
    # The caller keeps the stream to learn the compression, size and diff id without hashing twice.
    blob = compress(LAYER)
    stream = LayerStream(io.BytesIO(blob))
    applied = store.apply(None, stream)
    stream.drain()
    assert applied.diff_id == stream.diff_id() == sha(LAYER)
    assert stream.size == len(LAYER)
    assert stream.compression == ("none" if compress is bytes else "gzip")
    known = LayerStream(io.BytesIO(blob))
    assert store.apply(None, known, expected_diff_id=applied.diff_id) == applied
    assert known.size == len(LAYER) and known.diff_id() == applied.diff_id


def test_apply_twice_is_idempotent(store: LayerStore) -> None:
    first = store.apply(None, io.BytesIO(gzip.compress(LAYER)))
    again = store.apply(None, io.BytesIO(LAYER))
    assert again == first
    known = store.apply(None, io.BytesIO(LAYER), expected_diff_id=first.diff_id)
    assert known == first
    assert [i.name for i in store.snapshotter.walk()] == [first.chain_id]


@needs_root  # whiteouts are char 0/0 device nodes
def test_stacked_layers_and_remove(store: LayerStore) -> None:
    base = store.apply(None, io.BytesIO(LAYER))
    top_tar = make_tar([file("etc/.wh.hostname"), file("new", b"n")])
    top = store.apply(base.chain_id, io.BytesIO(top_tar))
    assert top.chain_id == chain_id(base.chain_id, sha(top_tar))
    assert store.snapshotter.stat(top.chain_id).parent == base.chain_id
    # The implied etc/ in the upper layer keeps the base layer's directory metadata.
    upper_etc = store.snapshotter.upperdir(top.chain_id) / "etc"
    base_etc = store.snapshotter.upperdir(base.chain_id) / "etc"
    assert upper_etc.stat().st_mode == base_etc.stat().st_mode
    mounts = store.prepare_rw("container1", top.chain_id)
    assert mounts[0].type == "overlay"
    with pytest.raises(errdefs.Conflict):
        store.remove(top.chain_id)
    store.remove_rw("container1")
    with pytest.raises(errdefs.Conflict):
        store.remove(base.chain_id)
    store.remove(top.chain_id)
    store.remove(base.chain_id)
    assert not store.has(base.chain_id)
    with pytest.raises(errdefs.NotFound):
        store.remove(base.chain_id)
    with pytest.raises(errdefs.NotFound):
        store.prepare_rw("c2", base.chain_id)


def test_unknown_parent(store: LayerStore) -> None:
    with pytest.raises(errdefs.NotFound):
        store.apply(D1, io.BytesIO(LAYER))
    assert list(store.snapshotter.walk()) == []


@pytest.mark.parametrize(
    "blob",
    [
        make_tar([file("ok", b"1"), file("../escape", b"2")]),
        gzip.compress(LAYER)[:-20],  # truncated gzip
        b"\x1f\x8b" + b"not really gzip" * 10,
        zstandard.ZstdCompressor().compress(LAYER)[:40],
        make_tar([file("a", os.urandom(5000))])[:3000],  # truncated tar
    ],
    ids=["breakout", "truncated-gzip", "bad-gzip", "truncated-zstd", "truncated-tar"],
)
def test_failure_leaves_nothing_behind(store: LayerStore, tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(errdefs.InvalidParameter):
        store.apply(None, io.BytesIO(blob))
    assert list(store.snapshotter.walk()) == []
    assert list((tmp_path / "overlay" / "snapshots").iterdir()) == []
    assert list((tmp_path / "overlay" / "trash").iterdir()) == []


def test_expected_diff_id_mismatch(store: LayerStore) -> None:
    with pytest.raises(errdefs.InvalidParameter, match="layer verification failed"):
        store.apply(None, io.BytesIO(LAYER), expected_diff_id=D1)
    assert list(store.snapshotter.walk()) == []
    applied = store.apply(None, io.BytesIO(LAYER))
    other = make_tar([file("other")])
    with pytest.raises(errdefs.InvalidParameter):
        store.apply(None, io.BytesIO(other), expected_diff_id=applied.diff_id)  # existing layer, wrong bytes
    assert [i.name for i in store.snapshotter.walk()] == [applied.chain_id]


def test_apply_blob_from_content_store(store: LayerStore) -> None:
    blob = gzip.compress(LAYER)
    dgst = store.content.put_bytes(blob)
    assert store.apply_blob(None, dgst).diff_id == sha(LAYER)


def test_interrupted_extraction_is_cleaned_on_open(tmp_path: Path) -> None:
    content, sn = ContentStore(tmp_path / "c"), OverlaySnapshotter(tmp_path / "o")
    sn.prepare("extract-deadbeef", None)
    sn.prepare("container", None)
    LayerStore(content, sn)
    assert [i.name for i in sn.walk()] == ["container"]


def test_two_hundred_files_is_fast(store: LayerStore) -> None:
    entries = [directory(f"d{i}") for i in range(20)]
    entries += [file(f"d{i % 20}/f{i}", os.urandom(512)) for i in range(200)]
    blob = gzip.compress(make_tar(entries))
    start = time.monotonic()
    applied = store.apply(None, io.BytesIO(blob))
    elapsed = time.monotonic() - start
    assert store.snapshotter.usage(applied.chain_id).inodes == 220
    assert elapsed < 3, f"200-file layer took {elapsed:.2f}s"


@pytest.mark.privileged
@needs_root
def test_layers_through_a_real_overlay(store: LayerStore, tmp_path: Path, mounts: MountTracker) -> None:
    base = store.apply(
        None,
        io.BytesIO(
            make_tar(
                [
                    directory("etc"),
                    file("etc/motd", b"hello"),
                    file("etc/keep", b"keep"),
                    directory("opt"),
                    file("opt/old1", b"1"),
                    directory("opt/sub"),
                    file("opt/sub/old2", b"2"),
                ]
            )
        ),
    )
    top = store.apply(
        base.chain_id,
        io.BytesIO(
            make_tar(
                [
                    directory("etc"),
                    file("etc/.wh.motd"),
                    directory("opt"),
                    file("opt/.wh..wh..opq"),
                    file("opt/new", b"new"),
                ]
            )
        ),
    )
    root = mounts.mount(store.prepare_rw("ctr", top.chain_id), tmp_path / "rootfs")
    assert not (root / "etc/motd").exists()  # whiteout hides the lower file
    assert (root / "etc/keep").read_text() == "keep"
    assert sorted(p.name for p in (root / "opt").iterdir()) == ["new"]  # opaque dir hides lower content
    (root / "etc/keep").unlink()
    assert (store.snapshotter.upperdir(base.chain_id) / "etc/keep").exists()  # lower untouched

    view = mounts.mount(store.snapshotter.view("v", top.chain_id), tmp_path / "view")
    assert sorted(p.name for p in view.iterdir()) == ["etc", "opt"]
    assert sorted(p.name for p in (view / "etc").iterdir()) == ["keep"]
    mounts.cleanup()
    mounts.targets.clear()
    store.remove_rw("ctr")
    store.snapshotter.remove("v")


def test_concurrent_apply_of_one_layer(store: LayerStore) -> None:
    blob = gzip.compress(make_tar([file(f"f{i}", os.urandom(2000)) for i in range(50)]))
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(store.apply(None, io.BytesIO(blob)))
        except BaseException as e:  # pragma: no cover - reported by the assertion
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1, results
    assert [i.name for i in store.snapshotter.walk()] == [results[0].chain_id]  # type: ignore[attr-defined]
