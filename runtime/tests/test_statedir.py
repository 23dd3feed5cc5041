"""statedir.py on made-up runc state directories (no root: the cgroups are plain directories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtime import statedir


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(statedir, "CGROUP_ROOT", f"{tmp_path}/cgroup/")
    monkeypatch.setattr(statedir, "RMDIR_FIRST_DELAY", 0.001)
    return tmp_path


def make(world: Path, **changes: Any) -> tuple[Path, list[Path]]:
    cgroups = {
        name: world / "cgroup" / name / "skiff" / "c1" for name in ("", "memory", "pids", "name=systemd")
    }
    for path in cgroups.values():
        path.mkdir(parents=True)
    state: dict[str, Any] = {
        "id": "c1",
        "config": {
            "namespaces": [{"type": "NEWNS", "path": ""}, {"type": "NEWPID", "path": ""}],
            "Hooks": {"poststop": None, "prestart": None},
        },
        "cgroup_paths": {k: str(v) for k, v in cgroups.items()},
        "intel_rdt_path": "",
    }
    state.update(changes)
    root = world / "runc" / "c1"
    root.mkdir(parents=True)
    (root / statedir.STATE_FILE).write_text(json.dumps(state))
    return root, list(cgroups.values())


def test_removes_the_cgroups_and_the_state(world: Path) -> None:
    root, cgroups = make(world)
    assert statedir.delete_stopped(root)
    assert not root.exists() and not any(p.exists() for p in cgroups)
    assert (world / "cgroup" / "memory" / "skiff").is_dir()  # the parent is not the container's


@pytest.mark.parametrize(
    "changes",
    [
        {"config": {"namespaces": [{"type": "NEWPID", "path": "/proc/1/ns/pid"}], "Hooks": {}}},
        {"config": {"namespaces": [{"type": "NEWNS", "path": ""}], "Hooks": {}}},
        {"config": {"namespaces": [{"type": "NEWPID", "path": ""}], "Hooks": {"poststop": [{"path": "/x"}]}}},
        {"intel_rdt_path": "/sys/fs/resctrl/c1"},
        {"cgroup_paths": {"memory": "/elsewhere/c1"}},
    ],
    ids=["joined-pid-ns", "no-pid-ns", "poststop-hook", "rdt", "foreign-cgroup"],
)
def test_anything_unusual_is_left_to_runc(world: Path, changes: dict[str, Any]) -> None:
    root, cgroups = make(world, **changes)
    assert not statedir.delete_stopped(root)
    assert (root / statedir.STATE_FILE).exists() and all(p.exists() for p in cgroups)


def test_a_cgroup_that_stays_busy_is_left_to_runc(world: Path) -> None:
    root, cgroups = make(world)
    (cgroups[1] / "child").mkdir()  # rmdir fails: not a kernel's busy cgroup, runc's to report
    assert not statedir.delete_stopped(root)
    assert (root / statedir.STATE_FILE).exists() and cgroups[1].exists()


def test_no_or_a_damaged_state_is_left_to_runc(world: Path) -> None:
    root = world / "runc" / "c2"
    assert not statedir.delete_stopped(root)
    root.mkdir(parents=True)
    (root / statedir.STATE_FILE).write_text("{")
    assert not statedir.delete_stopped(root)
    assert root.exists()
