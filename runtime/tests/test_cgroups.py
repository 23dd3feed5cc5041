"""cgroups.py against mountinfo samples and fake cgroup trees (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import cgroups

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
    assert cgroups.parse_blkio_v1("8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n") == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 8192},
        {"major": 8, "minor": 0, "op": "Total", "value": 12288},
    ]
    assert cgroups.parse_io_stat_v2("259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n") == [
        {"major": 259, "minor": 0, "op": "read", "value": 10},
        {"major": 259, "minor": 0, "op": "write", "value": 20},
    ]


def _write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_v1_stats_oom_and_freezer_from_a_fake_tree(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(
        v1={c: tmp_path / c for c in ("cpu", "cpuacct", "memory", "blkio", "pids", "freezer")},
        unified=tmp_path / "unified",
    )
    c = "skiff/c1"
    _write(
        tmp_path,
        {
            f"cpuacct/{c}/cpuacct.usage": "5000\n",
            f"cpuacct/{c}/cpuacct.usage_percpu": "3000 2000 \n",
            f"cpuacct/{c}/cpuacct.stat": "user 3\nsystem 1\n",
            f"cpu/{c}/cpu.stat": "nr_periods 4\nnr_throttled 1\nthrottled_time 77\n",
            f"memory/{c}/memory.usage_in_bytes": "1000\n",
            f"memory/{c}/memory.max_usage_in_bytes": "2000\n",
            f"memory/{c}/memory.limit_in_bytes": "33554432\n",
            f"memory/{c}/memory.failcnt": "5\n",
            f"memory/{c}/memory.stat": "cache 10\nrss 20\n",
            f"memory/{c}/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            f"blkio/{c}/blkio.throttle.io_service_bytes_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
            f"blkio/{c}/blkio.throttle.io_serviced_recursive": "8:0 Read 1\nTotal 1\n",
            f"pids/{c}/pids.current": "3\n",
            f"pids/{c}/pids.max": "max\n",
            f"freezer/{c}/freezer.state": "FROZEN\n",
        },
    )
    stats = cgroups.read_stats(layout, "/" + c)
    import os

    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert stats["cgroup_version"] == 1
    assert stats["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 5000,
            "percpu_usage": [3000, 2000],
            "usage_in_kernelmode": 1 * tick,
            "usage_in_usermode": 3 * tick,
        },
        "throttling_data": {"periods": 4, "throttled_periods": 1, "throttled_time": 77},
    }
    assert stats["memory_stats"] == {
        "usage": 1000,
        "max_usage": 2000,
        "failcnt": 5,
        "limit": 33554432,
        "stats": {"cache": 10, "rss": 20},
    }
    assert stats["blkio_stats"]["io_service_bytes_recursive"][1] == {
        "major": 8,
        "minor": 0,
        "op": "Write",
        "value": 2,
    }
    assert stats["pids_stats"] == {"current": 3, "limit": 0}
    assert cgroups.oom_kill_count(layout, "/" + c) == 1
    assert cgroups.freezer_state(layout, "/" + c) == "FROZEN"
    # A removed cgroup: nothing to report, no exception.
    assert cgroups.read_stats(layout, "/skiff/gone") == {"cgroup_version": 1}
    assert cgroups.oom_kill_count(layout, "/skiff/gone") is None


def test_v2_stats_oom_and_freezer_from_a_fake_tree(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(unified=tmp_path)
    c = "skiff/c2"
    _write(
        tmp_path,
        {
            f"{c}/cpu.stat": "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 0\nthrottled_usec 0\n",
            f"{c}/memory.current": "4096\n",
            f"{c}/memory.max": "max\n",
            f"{c}/memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\n",
            f"{c}/memory.stat": "anon 100\nfile 200\n",
            f"{c}/io.stat": "8:0 rbytes=5 wbytes=6 rios=1 wios=1\n",
            f"{c}/pids.current": "2\n",
            f"{c}/pids.max": "100\n",
            f"{c}/cgroup.events": "populated 1\nfrozen 1\n",
        },
    )
    stats = cgroups.read_stats(layout, "/" + c)
    assert stats["cgroup_version"] == 2
    assert stats["cpu_stats"]["cpu_usage"] == {
        "total_usage": 7000,
        "usage_in_kernelmode": 2000,
        "usage_in_usermode": 5000,
    }
    assert stats["memory_stats"] == {
        "usage": 4096,
        "limit": 2**64 - 1,
        "failcnt": 2,
        "stats": {"anon": 100, "file": 200},
    }
    assert [e["op"] for e in stats["blkio_stats"]["io_service_bytes_recursive"]] == ["read", "write"]
    assert stats["pids_stats"] == {"current": 2, "limit": 100}
    assert cgroups.oom_kill_count(layout, "/" + c) == 1
    assert cgroups.freezer_state(layout, "/" + c) == "FROZEN"


def test_remove_skips_busy_and_missing(tmp_path: Path) -> None:
    layout = cgroups.CgroupLayout(v1={"memory": tmp_path / "memory", "pids": tmp_path / "pids"})
    (tmp_path / "memory/skiff/c1").mkdir(parents=True)
    (tmp_path / "memory/skiff/c1/busy").mkdir()  # a real cgroup dir with a child is EBUSY/ENOTEMPTY
    cgroups.remove(layout, "/skiff/c1")
    assert (tmp_path / "memory/skiff/c1").exists()
    (tmp_path / "memory/skiff/c1/busy").rmdir()
    cgroups.remove(layout, "/skiff/c1")
    assert not (tmp_path / "memory/skiff/c1").exists()
