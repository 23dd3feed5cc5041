"""docker-py's networks with running containers: addresses in inspect, name and alias resolution
between containers of a user-defined network, connect/disconnect of a running container, and the
network events of start and stop.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Traffic stays between the
test's own containers. Everything a test makes is removed, also when it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from conftest import ContainerNames
from docker.models.containers import Container
from docker.models.networks import Network

_counter = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


@pytest.fixture
def network(session_token: str, dockerpy: docker.DockerClient, names: ContainerNames) -> Iterator[Network]:
    name = f"skpyhn-{session_token}-{next(_counter)}"
    net = dockerpy.networks.create(name, driver="bridge")
    yield net
    names.cleanup()  # the containers first: a network with endpoints cannot go
    with contextlib.suppress(docker.errors.NotFound):
        net.remove()


def address(c: Container, network: str) -> str:
    c.reload()
    endpoint = c.attrs["NetworkSettings"]["Networks"][network]
    ip = endpoint["IPAddress"]
    ipaddress.IPv4Address(ip)
    assert endpoint["IPPrefixLen"] > 0 and endpoint["Gateway"] and endpoint["MacAddress"]
    assert endpoint["NetworkID"] and endpoint["EndpointID"]
    return str(ip)


def interfaces(c: Container) -> list[str]:
    result = c.exec_run(["sh", "-c", "ls /sys/class/net"])
    assert result.exit_code == 0, result
    return sorted(result.output.decode().split())


def test_running_containers_get_addresses_and_resolve_each_other(
    dockerpy: docker.DockerClient, names: ContainerNames, network: Network
) -> None:
    server_name = names("server")
    server = dockerpy.containers.run(
        "busybox", "sleep 600", name=server_name, network=network.name, detach=True
    )
    client = dockerpy.containers.run(
        "busybox", "sleep 600", name=names("client"), network=network.name, detach=True
    )
    server_ip, client_ip = address(server, network.name), address(client, network.name)
    assert server_ip != client_ip
    assert ipaddress.IPv4Address(server_ip) in ipaddress.IPv4Network(
        network.attrs["IPAM"]["Config"][0]["Subnet"]
    )
    network.reload()
    assert sorted(c.id for c in network.containers) == sorted([server.id, client.id])
    for target in (server_name, server.id[:12]):
        ping = client.exec_run(["ping", "-c", "1", "-W", "3", target])
        assert ping.exit_code == 0, (target, ping.output)
        assert server_ip.encode() in ping.output


def test_alias_and_connect_disconnect_of_a_running_container(
    dockerpy: docker.DockerClient, names: ContainerNames, network: Network
) -> None:
    server = dockerpy.containers.run("busybox", "sleep 600", name=names("server"), detach=True)
    client = dockerpy.containers.run(
        "busybox", "sleep 600", name=names("client"), network=network.name, detach=True
    )
    assert interfaces(server) == ["eth0", "lo"]  # the default bridge
    network.connect(server, aliases=["db"])
    assert interfaces(server) == ["eth0", "eth1", "lo"]
    server_ip = address(server, network.name)
    assert "db" in server.attrs["NetworkSettings"]["Networks"][network.name]["Aliases"]
    ping = client.exec_run(["ping", "-c", "1", "-W", "3", "db"])
    assert ping.exit_code == 0 and server_ip.encode() in ping.output, ping.output
    network.disconnect(server)
    assert interfaces(server) == ["eth0", "lo"]
    server.reload()
    assert network.name not in server.attrs["NetworkSettings"]["Networks"]
    assert client.exec_run(["ping", "-c", "1", "-W", "1", "db"]).exit_code != 0


def test_network_none_has_only_loopback(dockerpy: docker.DockerClient, names: ContainerNames) -> None:
    c = dockerpy.containers.run("busybox", "sleep 600", name=names(), network_mode="none", detach=True)
    assert interfaces(c) == ["lo"]
    c.reload()
    assert list(c.attrs["NetworkSettings"]["Networks"]) == ["none"]


def test_start_and_stop_publish_network_connect_and_disconnect(
    dockerpy: docker.DockerClient, names: ContainerNames, network: Network
) -> None:
    since = time.time()
    c = dockerpy.containers.run("busybox", "sleep 600", name=names(), network=network.name, detach=True)
    c.stop(timeout=1)
    until = time.time()
    events = list(dockerpy.events(since=since, until=until, decode=True, filters={"network": network.id}))
    assert [e["Action"] for e in events] == ["connect", "disconnect"]
    for e in events:
        assert e["Type"] == "network" and e["Actor"]["ID"] == network.id and "status" not in e
        assert e["Actor"]["Attributes"] == {"container": c.id, "name": network.name, "type": "bridge"}
