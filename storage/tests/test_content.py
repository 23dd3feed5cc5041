"""ContentStore: verified ingest, no leftovers on mismatch, concurrent writers of one ref."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from engine import errdefs
from storage.content import ContentStore


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ingest_entries(store: ContentStore) -> list[str]:
    return os.listdir(store.root / "ingest")


def test_put_and_read(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    dgst = store.put_bytes(b"hello")
    assert dgst == digest_of(b"hello")
    assert store.has(dgst)
    assert store.read_bytes(dgst) == b"hello"
    assert store.size(dgst) == 5
    assert store.path(dgst) == tmp_path / "blobs" / "sha256" / dgst[7:]
    assert list(store.walk()) == [dgst]
    assert store.put_bytes(b"hello", expected=dgst) == dgst  # already there: fine
    assert ingest_entries(store) == []


def test_writer_streams_and_verifies(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = os.urandom(300_000)
    with store.writer("layer-1", expected=digest_of(data), size=len(data)) as w:
        for i in range(0, len(data), 65536):
            w.write(data[i : i + 65536])
        assert w.digest() == digest_of(data)
        assert w.commit() == digest_of(data)
    assert store.read_bytes(digest_of(data)) == data
    assert ingest_entries(store) == []


@pytest.mark.parametrize(
    ("expected", "size", "message"),
    [
        (digest_of(b"other"), None, "unexpected commit digest"),
        (None, 99, "unexpected commit size 4, expected 99"),
    ],
)
def test_mismatch_leaves_nothing(
    tmp_path: Path, expected: str | None, size: int | None, message: str
) -> None:
    store = ContentStore(tmp_path)
    w = store.writer("ref", expected=expected, size=size)
    w.write(b"data")
    with pytest.raises(errdefs.InvalidParameter, match=message):
        w.commit()
    assert ingest_entries(store) == []
    assert list(store.walk()) == []
    with pytest.raises(errdefs.InvalidParameter):
        store.put_bytes(b"data", expected=digest_of(b"x"))
    assert list(store.walk()) == []


def test_context_manager_aborts_uncommitted(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer("r") as w:
        w.write(b"partial")
        assert len(ingest_entries(store)) == 1
        raise RuntimeError("boom")
    assert ingest_entries(store) == []
    assert list(store.walk()) == []


def test_write_after_commit_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    w = store.writer("r")
    w.write(b"x")
    w.commit()
    with pytest.raises(errdefs.Internal):
        w.write(b"y")


def test_concurrent_writers_same_ref(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = os.urandom(1 << 20)
    errors: list[BaseException] = []
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            with store.writer("same-ref", expected=digest_of(data)) as w:
                barrier.wait()
                for i in range(0, len(data), 4096):
                    w.write(data[i : i + 4096])
                results.append(w.commit())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [digest_of(data)] * 8
    assert store.read_bytes(digest_of(data)) == data
    assert ingest_entries(store) == []


def test_stale_ingest_cleaned_at_open(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    w = store.writer("crashed")
    w.write(b"half")
    assert ingest_entries(store)
    reopened = ContentStore(tmp_path)  # a daemon restart after a crash
    assert ingest_entries(reopened) == []
    w.abort()


def test_delete_and_not_found(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    dgst = store.put_bytes(b"bye")
    store.delete(dgst)
    assert not store.has(dgst)
    for call in (store.delete, store.read_bytes, store.size):
        with pytest.raises(errdefs.NotFound):
            call(dgst)


@pytest.mark.parametrize(
    "bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "G" * 64, "", "../../etc/passwd"]
)
def test_bad_digests(tmp_path: Path, bad: str) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(errdefs.InvalidParameter):
        store.path(bad)
    with pytest.raises(errdefs.InvalidParameter):
        store.writer("r", expected=bad)
    assert ingest_entries(store) == []
