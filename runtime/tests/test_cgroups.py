"""cgroups.py against mountinfo samples and fake cgroup trees (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import cgroups
from runtime.tests.conftest import write_tree

HYBRID = """\
24 31 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:11 - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/freezer rw,relatime shared:12 - cgroup cgroup rw,freezer
30 25 0:28 / /sys/fs/cgroup/systemd rw,relatime shared:13 - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/unified rw,relatime shared:14 - cgroup2 cgroup2 rw,nsdelegate
"""

JOINT_V1 = """\
33 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
34 25 0:31 /docker/abc /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
35 25 0:32 / /mnt/with\\040space rw shared:17 - cgroup cgroup rw,blkio
"""

PURE_V2 = (
    "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
)


def test_hybrid_layout() -> None:
    layout = cgroups.CgroupLayout.from_mountinfo(HYBRID)
    assert layout.version == 1
    assert layout.unified == Path("/sys/fs/cgroup/unified")
    assert layout.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert layout.v1["name=systemd"] == Path("/sys/fs/cgroup/systemd")
    assert "xattr" not in layout.v1
    assert layout.dir("memory", "/skiff/c1") == Path("/sys/fs/cgroup/memory/skiff/c1")
    assert layout.dir("pids", "/skiff/c1") is None
    assert Path("/sys/fs/cgroup/unified/skiff/c1") in layout.all_dirs("/skiff/c1")


def test_joint_controllers_escapes_and_sub_cgroup_binds() -> None:
    layout = cgroups.CgroupLayout.from_mountinfo(JOINT_V1)
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert "pids" not in layout.v1  # root /docker/abc: not the hierarchy's root
    assert layout.v1["blkio"] == Path("/mnt/with space")
    assert len(layout.all_dirs("/x")) == 2


def test_pure_v2_layout() -> None:
    layout = cgroups.CgroupLayout.from_mountinfo(PURE_V2)
    assert layout.version == 2
    assert (
        layout.dir("memory", "/skiff/c1")
        == layout.dir("pids", "/skiff/c1")
        == Path("/sys/fs/cgroup/skiff/c1")
    )


def test_cgroups_path() -> None:
    assert cgroups.cgroups_path("abc") == "/skiff/abc"
    assert cgroups.cgroups_path("abc", "/other/") == "/other/abc"
    with pytest.raises(ValueError):
        cgroups.cgroups_path("abc", "relative")


def test_parsers() -> None:
    assert cgroups.parse_flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\nbad line here\n") == {
        "oom_kill_disable": 0,
        "under_oom": 0,
        "oom_kill": 2,
    }
    assert cgroups.parse_limit("max\n") is None
    assert cgroups.parse_limit("1024\n") == 1024


def test_v1_oom_and_freezer_from_a_fake_tree(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(
        v1={c: tmp_path / c for c in ("memory", "freezer")}, unified=tmp_path / "unified"
    )
    c = "skiff/c1"
    write_tree(
        tmp_path,
        {
            f"memory/{c}/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            f"freezer/{c}/freezer.state": "FROZEN\n",
        },
    )
    assert cgroups.oom_kill_count(layout, "/" + c) == 1
    assert cgroups.freezer_state(layout, "/" + c) == "FROZEN"
    # A removed cgroup: nothing to report, no exception.
    assert cgroups.oom_kill_count(layout, "/skiff/gone") is None
    assert cgroups.freezer_state(layout, "/skiff/gone") is None


def test_v2_oom_and_freezer_from_a_fake_tree(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(unified=tmp_path)
    c = "skiff/c2"
    write_tree(
        tmp_path,
        {
            f"{c}/memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
            f"{c}/cgroup.events": "populated 1\nfrozen 1\n",
        },
    )
    assert cgroups.oom_kill_count(layout, "/" + c) == 1
    assert cgroups.freezer_state(layout, "/" + c) == "FROZEN"
    (tmp_path / c / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert cgroups.freezer_state(layout, "/" + c) == "THAWED"


def test_file_readers_treat_gone_and_garbage_as_none(tmp_path: Path) -> None:
    write_tree(tmp_path, {"n": "42\n", "bad": "max\n"})
    assert cgroups.read_text(tmp_path / "n") == "42\n"
    assert cgroups.read_int(tmp_path / "n") == 42
    assert cgroups.read_int(tmp_path / "bad") is None
    assert cgroups.read_text(tmp_path / "gone") is None
    assert cgroups.read_int(tmp_path / "gone") is None


def test_remove_skips_busy_and_missing(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(v1={"memory": tmp_path / "memory", "pids": tmp_path / "pids"})
    (tmp_path / "memory/skiff/c1").mkdir(parents=True)
    (tmp_path / "memory/skiff/c1/busy").mkdir()  # a real cgroup dir with a child is EBUSY/ENOTEMPTY
    cgroups.remove(layout, "/skiff/c1")
    assert (tmp_path / "memory/skiff/c1").exists()
    (tmp_path / "memory/skiff/c1/busy").rmdir()
    cgroups.remove(layout, "/skiff/c1")
    assert not (tmp_path / "memory/skiff/c1").exists()
