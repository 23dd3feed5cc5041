"""ImageStore: configs as blobs, atomic per-image metadata, Moby-shaped repositories.json, reopening."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import errdefs
from storage.content import ContentStore
from storage.images import ImageStore, LayerRecord

CONFIG_A = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
CONFIG_B = b'{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = LayerRecord("sha256:" + "1" * 64, "sha256:" + "1" * 64, "sha256:" + "2" * 64, "x", 10, 20)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "image", ContentStore(tmp_path / "content"))


def test_create_get_and_files(store: ImageStore, tmp_path: Path) -> None:
    image_id = store.create(CONFIG_A, [LAYER])
    assert image_id.startswith("sha256:") and store.exists(image_id)
    assert store.create(CONFIG_A, []) == image_id  # idempotent: metadata kept
    got = store.get(image_id)
    assert got.config == CONFIG_A and got.meta.layers == (LAYER,)
    meta = json.loads((tmp_path / "image" / "meta" / f"{image_id[7:]}.json").read_text())
    assert meta["schema"] == 1 and meta["layers"][0]["chain_id"] == LAYER.chain_id
    assert meta["repo_digests"] == [] and meta["parent"] is None
    assert store.count() == 1 and store.ids() == [image_id]


def test_references_moby_shape_and_reopen(store: ImageStore, tmp_path: Path) -> None:
    a = store.create(CONFIG_A, [])
    b = store.create(CONFIG_B, [])
    assert store.add_reference("busybox", "busybox:latest", a) is None
    assert store.add_reference("busybox", "busybox:latest", b) == a  # moved
    store.add_reference("busybox", "busybox:1", a)
    doc = json.loads((tmp_path / "image" / "repositories.json").read_text())
    assert doc == {"schema": 1, "Repositories": {"busybox": {"busybox:latest": b, "busybox:1": a}}}
    reopened = ImageStore(tmp_path / "image", ContentStore(tmp_path / "content"))
    assert reopened.get_reference("busybox", "busybox:latest") == b
    assert sorted(reopened.references(a)) == ["busybox:1"]
    assert reopened.references_by_name("busybox") == [("busybox:1", a), ("busybox:latest", b)]
    assert reopened.delete_reference("busybox", "busybox:1")
    assert not reopened.delete_reference("busybox", "busybox:1")


def test_search_prefix(store: ImageStore) -> None:
    a = store.create(CONFIG_A, [])
    b = store.create(CONFIG_B, [])
    assert store.search(a[7:19]) == a
    assert store.search(a) == a
    assert store.search("sha256:" + b[7:15]) == b
    assert store.search("") is None
    assert store.search("zz") is None
    assert store.search("md5:" + a[7:15]) is None
    by_first: dict[str, str] = {}
    n = 0
    while True:  # two IDs with the same first hex digit make that digit ambiguous
        image_id = store.create(b'{"n":%d}' % n, [])
        n += 1
        if image_id[7] in by_first:
            break
        by_first[image_id[7]] = image_id
    assert store.search(image_id[7]) is None
    assert store.search(image_id[7:20]) == image_id


def test_delete_removes_refs_meta_blob_and_parent_links(store: ImageStore, tmp_path: Path) -> None:
    a = store.create(CONFIG_A, [])
    b = store.create(CONFIG_B, [], parent=a)
    store.add_reference("x", "x:1", a)
    assert store.children(a) == [b]
    store.delete(a)
    assert not store.exists(a)
    assert not (tmp_path / "image" / "meta" / f"{a[7:]}.json").exists()
    assert not store.content.has(a)
    assert store.references(a) == [] and store.get_reference("x", "x:1") is None
    assert store.meta(b).parent is None
    with pytest.raises(errdefs.NotFound):
        store.get(a)
    with pytest.raises(errdefs.NotFound):
        store.delete(a)


def test_open_ignores_dangling_state(tmp_path: Path) -> None:
    content = ContentStore(tmp_path / "content")
    store = ImageStore(tmp_path / "image", content)
    a = store.create(CONFIG_A, [])
    store.add_reference("x", "x:1", a)
    (tmp_path / "image" / "tmp" / "leftover.tar").write_bytes(b"junk")
    content.delete(a)  # a crash between blob delete and meta delete, the other way round
    reopened = ImageStore(tmp_path / "image", content)
    assert not reopened.exists(a)
    assert reopened.get_reference("x", "x:1") is None
    assert list((tmp_path / "image" / "tmp").iterdir()) == []


def test_last_tag_time_and_layer_queries(store: ImageStore) -> None:
    a = store.create(CONFIG_A, [LAYER])
    store.set_last_tag_time(a, "2024-01-01T00:00:00Z")
    assert store.meta(a).last_tag_time == "2024-01-01T00:00:00Z"
    assert store.chain_ids_in_use() == {LAYER.chain_id}
    assert store.chain_ids_in_use(exclude=[a]) == set()
    assert store.layer_blobs_in_use() == {LAYER.blob}
    assert store.find_layer(LAYER.diff_id, LAYER.chain_id) is None  # its blob is not stored
