"""cgroupstats.py against fake cgroup v1 and v2 trees and /proc samples (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import cgroupstats
from runtime.cgroups import CgroupLayout
from runtime.tests.conftest import write_tree

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
# A v1 memory.stat as this kernel writes it: more keys than dockerd reports (shmem, swap, ...).
V1_MEMORY_STAT = """cache 106496
rss 118784
rss_huge 0
shmem 0
mapped_file 4096
dirty 0
writeback 0
workingset_refault_anon 0
swap 0
pgpgin 34260
pgpgout 34205
pgfault 59558
pgmajfault 1
inactive_anon 110592
active_anon 8192
inactive_file 102400
active_file 4096
unevictable 0
hierarchical_memory_limit 9223372036854771712
hierarchical_memsw_limit 9223372036854771712
total_cache 106496
total_rss 118784
total_shmem 0
total_inactive_file 102400
"""
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier
 lo: 120 2 0 0 0 0 0 0 120 2 0 0 0 0 0 0
 eth0: 796 10 1 2 0 0 0 0 350 4 3 5 0 0 0 0
 tunl0: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 eth1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
"""


def _v1_layout(base: Path) -> CgroupLayout:
    return CgroupLayout(v1={c: base / c for c in ("cpu", "cpuacct", "memory", "blkio", "pids")})


def _v1_tree(base: Path, c: str, blkio: dict[str, str]) -> None:
    write_tree(
        base,
        {
            f"cpuacct/{c}/cpuacct.usage": "65343202\n",
            f"cpuacct/{c}/cpuacct.usage_percpu": "49300713 16042489 \n",
            f"cpuacct/{c}/cpuacct.stat": "user 5\nsystem 1\n",
            f"cpu/{c}/cpu.stat": "nr_periods 4\nnr_throttled 1\nthrottled_time 77\n",
            f"memory/{c}/memory.usage_in_bytes": "794624\n",
            f"memory/{c}/memory.max_usage_in_bytes": "4083712\n",
            f"memory/{c}/memory.limit_in_bytes": "9223372036854771712\n",
            f"memory/{c}/memory.failcnt": "0\n",
            f"memory/{c}/memory.stat": V1_MEMORY_STAT,
            f"pids/{c}/pids.current": "2\n",
            f"pids/{c}/pids.max": "max\n",
            **{f"blkio/{c}/{name}": text for name, text in blkio.items()},
        },
    )


def test_v1_with_throttle_counters_only(tmp_path: Path) -> None:
    c = "skiff/c1"
    _v1_tree(
        tmp_path,
        c,
        {
            # No CFQ files (bfq/none scheduler): containerd reads the non-recursive throttle files.
            "blkio.throttle.io_service_bytes": (
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n"
            ),
            "blkio.throttle.io_serviced": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
            "blkio.throttle.io_service_bytes_recursive": "8:0 Read 999\nTotal 999\n",
        },
    )
    stats = cgroupstats.read_cgroup(_v1_layout(tmp_path), "/" + c)
    assert stats is not None
    assert stats["pids_stats"] == {"current": 2}  # "max" is no limit: omitted
    assert stats["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 65343202,
            "percpu_usage": [49300713, 16042489],
            "usage_in_kernelmode": 1 * TICK_NS,
            "usage_in_usermode": 5 * TICK_NS,
        },
        "throttling_data": {"periods": 4, "throttled_periods": 1, "throttled_time": 77},
    }
    memory = stats["memory_stats"]
    assert list(memory) == ["usage", "max_usage", "stats", "limit"]  # failcnt 0: omitted
    assert memory["usage"] == 794624 and memory["max_usage"] == 4083712
    assert memory["limit"] == 9223372036854771712  # unclamped: the engine knows the machine
    assert tuple(memory["stats"]) == cgroupstats.V1_MEMORY_KEYS
    assert memory["stats"]["mapped_file"] == 4096 and memory["stats"]["total_inactive_file"] == 102400
    assert memory["stats"]["total_pgfault"] == 0  # missing in the file: zero, as dockerd
    blkio = stats["blkio_stats"]
    assert list(blkio) == list(cgroupstats.BLKIO_LISTS)
    assert blkio["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 8192},
        {"major": 8, "minor": 0, "op": "Total", "value": 12288},
    ]
    assert [e["value"] for e in blkio["io_serviced_recursive"]] == [1, 2, 3]
    assert all(blkio[name] == [] for name in cgroupstats.BLKIO_LISTS[2:])


def test_v1_with_cfq_files_fills_all_eight_lists(tmp_path: Path) -> None:
    c = "skiff/c2"
    cfq = {
        "blkio.sectors_recursive": "8:0 16\n",
        "blkio.io_service_bytes_recursive": "8:0 Read 4096\nTotal 4096\n",
        "blkio.io_serviced_recursive": "8:0 Read 1\nTotal 1\n",
        "blkio.io_queued_recursive": "8:0 Read 0\nTotal 0\n",
        "blkio.io_service_time_recursive": "8:0 Read 7\nTotal 7\n",
        "blkio.io_wait_time_recursive": "8:0 Read 8\nTotal 8\n",
        "blkio.io_merged_recursive": "8:0 Read 9\nTotal 9\n",
        "blkio.time_recursive": "8:0 10\n",
        "blkio.throttle.io_service_bytes": "8:0 Read 1\nTotal 1\n",
    }
    _v1_tree(tmp_path, c, cfq)
    stats = cgroupstats.read_cgroup(_v1_layout(tmp_path), "/" + c)
    assert stats is not None
    blkio = stats["blkio_stats"]
    assert blkio["sectors_recursive"] == [{"major": 8, "minor": 0, "op": "", "value": 16}]
    assert blkio["io_time_recursive"] == [{"major": 8, "minor": 0, "op": "", "value": 10}]
    assert blkio["io_service_bytes_recursive"][0]["value"] == 4096
    assert blkio["io_queue_recursive"][0]["value"] == 0
    assert blkio["io_merged_recursive"][0]["value"] == 9


def test_v1_gone_and_limits(tmp_path: Path) -> None:
    layout = _v1_layout(tmp_path)
    assert cgroupstats.read_cgroup(layout, "/skiff/gone") is None
    c = "skiff/c3"
    _v1_tree(tmp_path, c, {})
    write_tree(
        tmp_path,
        {
            f"pids/{c}/pids.max": "64\n",
            f"memory/{c}/memory.failcnt": "3\n",
            f"memory/{c}/memory.limit_in_bytes": "33554432\n",
        },
    )
    stats = cgroupstats.read_cgroup(layout, "/" + c)
    assert stats is not None
    assert stats["pids_stats"] == {"current": 2, "limit": 64}
    assert stats["memory_stats"]["failcnt"] == 3 and stats["memory_stats"]["limit"] == 33554432
    # No blkio hierarchy at all: eight empty lists.
    assert stats["blkio_stats"] == {name: [] for name in cgroupstats.BLKIO_LISTS}


def test_v2_tree(tmp_path: Path) -> None:
    layout = CgroupLayout(unified=tmp_path)
    c = "skiff/c4"
    write_tree(
        tmp_path,
        {
            f"{c}/cpu.stat": (
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 2\nnr_throttled 1\n"
                "throttled_usec 3\n"
            ),
            f"{c}/memory.current": "2097152\n",
            f"{c}/memory.max": "max\n",
            f"{c}/memory.stat": "anon 100\nfile 200\ninactive_file 50\nworkingset_refault_anon 9\n",
            f"{c}/memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
            f"{c}/io.stat": "259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
            f"{c}/pids.current": "4\n",
            f"{c}/pids.max": "100\n",
        },
    )
    stats = cgroupstats.read_cgroup(layout, "/" + c)
    assert stats is not None
    assert stats["cpu_stats"] == {
        "cpu_usage": {
            "total_usage": 1_500_000,
            "usage_in_kernelmode": 500_000,
            "usage_in_usermode": 1_000_000,
        },
        "throttling_data": {"periods": 2, "throttled_periods": 1, "throttled_time": 3000},
    }
    memory = stats["memory_stats"]
    assert list(memory) == ["usage", "stats", "limit"]
    assert memory["usage"] == 2097152 and memory["limit"] == cgroupstats.UINT64_MAX
    assert tuple(memory["stats"]) == cgroupstats.V2_MEMORY_KEYS
    assert memory["stats"]["anon"] == 100 and memory["stats"]["inactive_file"] == 50
    assert stats["blkio_stats"]["io_service_bytes_recursive"] == [
        {"major": 259, "minor": 0, "op": "read", "value": 10},
        {"major": 259, "minor": 0, "op": "write", "value": 20},
    ]
    # Only the byte counters exist on v2; the other lists are Go's nil.
    assert all(stats["blkio_stats"][name] is None for name in cgroupstats.BLKIO_LISTS[1:])
    assert stats["pids_stats"] == {"current": 4, "limit": 100}
    assert cgroupstats.read_cgroup(layout, "/skiff/gone") is None


def test_v2_without_io_and_with_a_memory_limit(tmp_path: Path) -> None:
    layout = CgroupLayout(unified=tmp_path)
    c = "skiff/c5"
    write_tree(tmp_path, {f"{c}/memory.current": "10\n", f"{c}/memory.max": "1048576\n", f"{c}/io.stat": ""})
    stats = cgroupstats.read_cgroup(layout, "/" + c)
    assert stats is not None
    assert stats["blkio_stats"]["io_service_bytes_recursive"] is None
    assert stats["memory_stats"]["limit"] == 1048576
    assert stats["pids_stats"] == {}
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] == 0


def test_parse_blkio_entries_skips_noise() -> None:
    text = "8:0 Read 1\ngarbage\n8:16 Write x\n8:16 Write 2\nTotal 3\n"
    assert cgroupstats.parse_blkio_entries(text) == [
        {"major": 8, "minor": 0, "op": "Read", "value": 1},
        {"major": 8, "minor": 16, "op": "Write", "value": 2},
    ]


def test_parse_proc_stat() -> None:
    text = (
        "cpu  699346 0 170642 1969896 10511 0 4997 27676 0 0\n"
        "cpu0 352554 0 85706 981792 5837 0 1755 13843 0 0\n"
        "cpu1 346791 0 84936 988104 4674 0 3241 13832 0 0\n"
        "intr 1 2 3\nctxt 99\n"
    )
    usage, cpus = cgroupstats.parse_proc_stat(text, clock_ticks=100)
    # user..softirq (steal left out), in ns at 100 ticks a second
    assert usage == (699346 + 170642 + 1969896 + 10511 + 4997) * 10_000_000
    assert cpus == 2
    with pytest.raises(ValueError, match="invalid number of cpu fields"):
        cgroupstats.parse_proc_stat("cpu 1 2 3\n")


def test_system_cpu_and_networks_from_a_proc_tree(tmp_path: Path) -> None:
    write_tree(
        tmp_path, {"stat": "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n", "42/net/dev": NET_DEV}
    )
    usage, cpus = cgroupstats.read_system_cpu(tmp_path)
    assert usage == 28 * 1_000_000_000 // os.sysconf("SC_CLK_TCK") and cpus == 1
    networks = cgroupstats.read_networks(42, tmp_path)
    assert networks == {
        "eth0": {
            "rx_bytes": 796,
            "rx_packets": 10,
            "rx_errors": 1,
            "rx_dropped": 2,
            "tx_bytes": 350,
            "tx_packets": 4,
            "tx_errors": 3,
            "tx_dropped": 5,
        },
        "eth1": {
            "rx_bytes": 5,
            "rx_packets": 1,
            "rx_errors": 0,
            "rx_dropped": 0,
            "tx_bytes": 6,
            "tx_packets": 1,
            "tx_errors": 0,
            "tx_dropped": 0,
        },
    }
    assert cgroupstats.read_networks(43, tmp_path) is None


def test_the_real_host_proc_stat_parses() -> None:
    usage, cpus = cgroupstats.read_system_cpu()
    assert usage > 0 and cpus == os.sysconf("SC_NPROCESSORS_ONLN")
