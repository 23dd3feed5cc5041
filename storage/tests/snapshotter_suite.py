"""Conformance suite for snapshotters (containerd's snapshots/testsuite, in spirit).

Subclass ``SnapshotterSuite`` and implement ``new(root)`` (open, or reopen, a snapshotter
at ``root``). Everything here goes through the public API plus ``upperdir`` for writing
files; kernel mounts are exercised separately by the privileged tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import errdefs
from storage.snapshots import OverlaySnapshotter


class SnapshotterSuite:
    def new(self, root: Path) -> OverlaySnapshotter:
        raise NotImplementedError

    def committed_chain(self, sn: OverlaySnapshotter, names: list[str]) -> None:
        parent: str | None = None
        for name in names:
            sn.prepare(f"active-{name}", parent)
            (sn.upperdir(f"active-{name}") / name).write_text(name)
            sn.commit(name, f"active-{name}")
            parent = name

    def test_prepare_commit_stat(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        sn.prepare("k1", None, labels={"a": "b"})
        info = sn.stat("k1")
        assert (info.name, info.kind, info.parent, info.labels) == ("k1", "active", None, {"a": "b"})
        (sn.upperdir("k1") / "f").write_bytes(b"12345")
        sn.commit("c1", "k1", labels={"x": "y"})
        assert not sn.exists("k1")
        info = sn.stat("c1")
        assert (info.kind, info.parent, info.labels) == ("committed", None, {"a": "b", "x": "y"})
        assert sn.usage("c1").size == 5
        assert sn.usage("c1").inodes == 1
        with pytest.raises(errdefs.NotFound):
            sn.stat("k1")

    def test_prepare_on_parent(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["base", "mid"])
        sn.prepare("rw", "mid")
        assert sn.stat("rw").parent == "mid"
        assert sn.lowerdirs("rw") == [sn.upperdir("mid"), sn.upperdir("base")]

    def test_duplicate_and_bad_parent(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        sn.prepare("k", None)
        with pytest.raises(errdefs.Conflict):
            sn.prepare("k", None)
        with pytest.raises(errdefs.NotFound):
            sn.prepare("k2", "missing")
        with pytest.raises(errdefs.InvalidParameter):
            sn.prepare("k2", "k")  # parent must be committed
        sn.commit("c", "k")
        sn.prepare("k2", "c")
        with pytest.raises(errdefs.Conflict):
            sn.commit("c", "k2")  # name taken
        assert sn.exists("k2")  # the failed commit left it alone
        with pytest.raises(errdefs.Conflict):
            sn.prepare("c", None)  # keys and names share one namespace
        assert sorted(i.name for i in sn.walk()) == ["c", "k2"]

    def test_view_is_not_committable(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["base"])
        sn.view("v", "base")
        assert sn.stat("v").kind == "view"
        with pytest.raises(errdefs.InvalidParameter):
            sn.commit("c", "v")
        with pytest.raises(errdefs.InvalidParameter):
            sn.mounts("base")  # committed snapshots are mounted through a view

    def test_remove(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["base", "mid"])
        sn.prepare("rw", "mid")
        with pytest.raises(errdefs.Conflict):
            sn.remove("mid")
        with pytest.raises(errdefs.Conflict):
            sn.remove("base")
        sn.remove("rw")
        sn.remove("mid")
        sn.remove("base")
        with pytest.raises(errdefs.NotFound):
            sn.remove("base")
        assert list(sn.walk()) == []
        assert list((tmp_path / "snapshots").iterdir()) == []
        assert list((tmp_path / "trash").iterdir()) == []

    def test_walk_order_and_usage(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["a", "b", "c"])
        sn.prepare("rw", "c")
        (sn.upperdir("rw") / "dir").mkdir()
        (sn.upperdir("rw") / "dir" / "f").write_bytes(b"x" * 1000)
        assert [(i.name, i.kind, i.parent) for i in sn.walk()] == [
            ("a", "committed", None),
            ("b", "committed", "a"),
            ("c", "committed", "b"),
            ("rw", "active", "c"),
        ]
        usage = sn.usage("rw")
        assert (usage.size, usage.inodes) == (1000, 2)

    def test_any_key_characters(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        keys = ["sha256:" + "a" * 64, "../../etc", "with space/and:colon,comma", "ünïcode", "a" * 1000]
        for key in keys:
            sn.prepare(key, None)
            assert sn.exists(key)
        sn2 = self.new(tmp_path)
        assert sorted(i.name for i in sn2.walk()) == sorted(keys)
        assert not (tmp_path / "etc").exists()

    def test_restart_sees_same_state(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["base", "top"])
        sn.prepare("rw", "top", labels={"container": "c1"})
        sn.view("v", "base")
        (sn.upperdir("rw") / "new").write_text("data")
        before = [(i.name, i.kind, i.parent, i.labels) for i in sn.walk()]
        mounts_before = sn.mounts("rw")
        sn2 = self.new(tmp_path)
        assert [(i.name, i.kind, i.parent, i.labels) for i in sn2.walk()] == before
        assert sn2.mounts("rw") == mounts_before
        assert (sn2.upperdir("rw") / "new").read_text() == "data"
        # New ids never reuse a live one.
        sn2.prepare("after", "top")
        assert len({sn2.upperdir(i.name) for i in sn2.walk()}) == 5

    def test_crash_leftovers_are_discarded(self, tmp_path: Path) -> None:
        sn = self.new(tmp_path)
        self.committed_chain(sn, ["base"])
        # A prepare that died before writing meta.json, and a remove that died in trash/.
        (tmp_path / "snapshots" / "99" / "fs").mkdir(parents=True)
        (tmp_path / "trash" / "5-dead" / "fs").mkdir(parents=True)
        sn2 = self.new(tmp_path)
        assert [i.name for i in sn2.walk()] == ["base"]
        assert not (tmp_path / "snapshots" / "99").exists()
        assert list((tmp_path / "trash").iterdir()) == []
