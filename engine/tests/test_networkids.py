"""IDs of the pre-defined networks: made once, then stable for the data root."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine import networkids


def test_ids_are_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "network" / "predefined.json"
    first = networkids.load_or_create(path)
    assert sorted(first) == ["bridge", "host", "none"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in first.values())
    assert len(set(first.values())) == 3
    assert networkids.load_or_create(path) == first
    assert json.loads(path.read_text())["schema"] == 1


def test_a_damaged_file_is_completed(tmp_path: Path) -> None:
    path = tmp_path / "predefined.json"
    path.write_text(json.dumps({"schema": 1, "networks": {"bridge": "a" * 64, "bogus": "x"}}))
    ids = networkids.load_or_create(path)
    assert ids["bridge"] == "a" * 64 and "bogus" not in ids and sorted(ids) == ["bridge", "host", "none"]
    path.write_text("{not json")
    assert sorted(networkids.load_or_create(path)) == ["bridge", "host", "none"]
