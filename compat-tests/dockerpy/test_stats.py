"""docker-py `Container.stats`: one sample (primed or one-shot), a decoded stream closed by the
client, a stopped container's zero sample, network counters; raw HTTP for the 400 and 404.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from conftest import ContainerNames, Daemon

ZERO_TIME = "0001-01-01T00:00:00Z"
ZERO_CPU = {
    "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
    "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
}
BLKIO_LISTS = {
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
}
BUSY = "sleep 600 & while true; do :; done"
# Devices the kernel adds to every network namespace; never a container endpoint.
FALLBACK_DEVICES = {
    "lo",
    "tunl0",
    "sit0",
    "ip6tnl0",
    "gre0",
    "gretap0",
    "erspan0",
    "ip_vti0",
    "ip6_vti0",
    "ip6gre0",
}


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


def check_running_sample(s: dict[str, Any], name: str, cid: str) -> None:
    assert s["name"] == f"/{name}" and s["id"] == cid
    assert s["read"] != ZERO_TIME and s["num_procs"] == 0 and s["storage_stats"] == {}
    assert set(s["blkio_stats"]) == BLKIO_LISTS
    cpu = s["cpu_stats"]
    assert cpu["cpu_usage"]["total_usage"] > 0 and cpu["system_cpu_usage"] > 0 and cpu["online_cpus"] >= 1
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    mem = s["memory_stats"]
    assert mem["usage"] > 0 and mem["limit"] == 64 * 1024 * 1024
    assert "inactive_file" in mem["stats"] or "total_inactive_file" in mem["stats"]
    assert s["pids_stats"]["current"] == 2


def test_stats_single_primed_and_one_shot(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names("busy")
    c = dockerpy.containers.run(
        "busybox", ["sh", "-c", BUSY], name=name, detach=True, network_mode="none", mem_limit="64m"
    )
    s = c.stats(stream=False)
    check_running_sample(s, name, c.id)
    assert s["preread"] != ZERO_TIME and s["preread"] < s["read"]
    pre = s["precpu_stats"]
    assert 0 < pre["cpu_usage"]["total_usage"] < s["cpu_stats"]["cpu_usage"]["total_usage"]
    assert 0 < pre["system_cpu_usage"] < s["cpu_stats"]["system_cpu_usage"]
    assert "networks" not in s  # --network none: no endpoint to count
    s = c.stats(stream=False, one_shot=True)
    check_running_sample(s, name, c.id)
    assert s["preread"] == ZERO_TIME and s["precpu_stats"] == ZERO_CPU


def test_stats_stream_decoded_then_closed(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    name = names("stream")
    c = dockerpy.containers.run(
        "busybox", ["sh", "-c", BUSY], name=name, detach=True, network_mode="none", mem_limit="64m"
    )
    stream = c.stats(decode=True)
    try:
        frames = [next(stream) for _ in range(3)]
    finally:
        stream.close()
    for frame in frames:
        check_running_sample(frame, name, c.id)
    assert frames[0]["preread"] == ZERO_TIME and frames[0]["precpu_stats"] == ZERO_CPU
    for before, after in itertools.pairwise(frames):
        assert after["preread"] == before["read"] and after["precpu_stats"] == before["cpu_stats"]
    # The daemon keeps serving once the stream's client is gone.
    assert c.stats(stream=False, one_shot=True)["id"] == c.id


def test_stats_of_a_container_that_is_not_running(
    dockerpy: docker.DockerClient, names: ContainerNames, api: httpx.Client
) -> None:
    name = names("idle")
    c = dockerpy.containers.create("busybox", "true", name=name)
    zero = {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": dict.fromkeys(BLKIO_LISTS),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": ZERO_CPU,
        "precpu_stats": ZERO_CPU,
        "memory_stats": {},
        "name": f"/{name}",
        "id": c.id,
    }
    assert c.stats(stream=False) == zero
    stream = c.stats(decode=True)
    try:
        assert next(stream) == zero
    finally:
        stream.close()
    r = api.get(f"/containers/{name}/stats", params={"stream": "1", "one-shot": "1"})
    assert (r.status_code, r.json()) == (400, {"message": "cannot have stream=true and one-shot=true"})
    r = api.get("/containers/skifftest-no-such-container/stats", params={"stream": "1", "one-shot": "1"})
    assert (r.status_code, r.json()) == (404, {"message": "No such container: skifftest-no-such-container"})
    r = api.get(f"/containers/{name}/stats", params={"stream": "0"})
    assert r.headers["content-type"] == "application/json"


def test_stats_networks_are_the_namespace_interfaces(
    dockerpy: docker.DockerClient, names: ContainerNames, daemon: Daemon
) -> None:
    name = names("net")
    c = dockerpy.containers.run("busybox", "sleep 600", name=name, detach=True)
    inside = c.exec_run(["cat", "/proc/net/dev"]).output.decode()
    interfaces = {line.split(":")[0].strip() for line in inside.splitlines()[2:]} - FALLBACK_DEVICES
    s = c.stats(stream=False, one_shot=True)
    if daemon.is_docker:
        assert interfaces == {"eth0"}
    if interfaces:
        assert set(s["networks"]) == interfaces
        counters = s["networks"][sorted(interfaces)[0]]
        assert set(counters) == {
            f"{d}_{k}" for d in ("rx", "tx") for k in ("bytes", "packets", "errors", "dropped")
        }
    else:
        assert "networks" not in s  # only loopback: dockerd's omitempty
    host = names("host")
    c = dockerpy.containers.run("busybox", "sleep 600", name=host, detach=True, network_mode="host")
    assert "networks" not in c.stats(stream=False, one_shot=True)
