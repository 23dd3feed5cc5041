"""Containers on networks with the real CLI: name resolution on user networks (name, alias,
``<name>.<network>``, PTR), published ports reached from the host, isolation between networks,
``--internal``, connect/disconnect of running containers, ``-P``, port conflicts, ``container:``
mode, the /etc/hosts and /etc/resolv.conf dockerd writes, and a daemon restart with networks and
running containers.

Every test removes what it made, also when it fails. Nothing leaves this host: containers only
talk to each other and to 127.0.0.1, and test daemons reject forwarding to the outside interface.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Daemon, Run, ok

_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 10.0) -> str:
    """GET from the host, retrying while the server in the container starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with httpx.Client(trust_env=False, timeout=2) as client:
                return client.get(url).text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Lab:
    """Names, networks and containers of one test; ``cleanup`` removes them all."""

    def __init__(self, token: str, docker: Callable[..., Run]) -> None:
        self.prefix = f"sknet-{token}-{next(_counter)}"
        self.docker = docker
        self.networks: list[str] = []
        self.containers: list[str] = []

    def name(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.containers.append(name)
        return name

    def network(self, suffix: str, *args: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.networks.append(name)
        ok(self.docker("network", "create", *args, name))
        return name

    def httpd(self, suffix: str, *args: str) -> str:
        """A busybox httpd serving its own hostname at /hostname."""
        name = self.name(suffix)
        ok(
            self.docker(
                "run", "-d", "--name", name, *args, "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"
            )
        )
        return name

    def run(self, *args: str) -> Run:
        return self.docker("run", "--rm", *args)

    def cleanup(self) -> None:
        for c in self.containers:
            self.docker("rm", "-f", c)
        for n in self.networks:
            self.docker("network", "rm", n)


@pytest.fixture
def lab(docker: Callable[..., Run], session_token: str, busybox_tar: Path) -> Iterator[Lab]:
    ok(docker("load", "-i", busybox_tar))
    made = Lab(session_token[:8], docker)
    try:
        yield made
    finally:
        made.cleanup()


def inspect(docker: Callable[..., Run], name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(ok(docker("inspect", name)))
    return data[0]


def short_id(docker: Callable[..., Run], name: str) -> str:
    return str(inspect(docker, name)["Id"])[:12]


@contextlib.contextmanager
def ip_forwarding() -> Iterator[None]:
    """Routing between bridges on: without it isolation between networks holds trivially.
    The host's value is put back afterwards."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


# --- names -----------------------------------------------------------------------------------------


def test_names_resolve_on_a_user_network(docker: Callable[..., Run], lab: Lab) -> None:
    net = lab.network("n")
    web = lab.httpd("web", "--network", net, "--network-alias", "www.internal")
    wid = short_id(docker, web)
    script = (
        f"wget -qO- http://{web}/hostname; wget -qO- http://www.internal/hostname; "
        f"wget -qO- http://{web}.{net}/hostname; wget -qO- http://www.internal.{net}/hostname; "
        f"wget -qO- http://{wid}/hostname"
    )
    out = ok(lab.run("--network", net, "busybox", "sh", "-c", script))
    assert out.split() == [wid] * 5
    ip = inspect(docker, web)["NetworkSettings"]["Networks"][net]["IPAddress"]
    ptr = ok(lab.run("--network", net, "busybox", "nslookup", ip, "127.0.0.11"))
    assert f"{web}.{net}" in ptr
    resolv = ok(lab.run("--network", net, "busybox", "cat", "/etc/resolv.conf"))
    assert resolv.splitlines()[0] == "nameserver 127.0.0.11"
    assert "options ndots:0" in resolv


def test_unknown_names_fail_fast_without_upstreams(
    docker: Callable[..., Run], lab: Lab, daemon: Daemon
) -> None:
    if daemon.is_docker:
        pytest.skip("dockerd forwards to the host's resolvers")
    net = lab.network("n")
    started = time.monotonic()
    res = lab.run("--network", net, "busybox", "nslookup", "no-such-name.example", "127.0.0.11")
    assert res.rc != 0 and "SERVFAIL" in res.stdout + res.stderr
    assert time.monotonic() - started < 5


def test_default_bridge_has_no_name_resolution(docker: Callable[..., Run], lab: Lab) -> None:
    web = lab.httpd("web")
    res = lab.run(
        "busybox",
        "sh",
        "-c",
        # No lookup through the host's resolvers here: nothing may leave this machine.
        f"grep -c 127.0.0.11 /etc/resolv.conf; nslookup {web} 127.0.0.11",
    )
    assert res.rc != 0
    assert res.stdout.splitlines()[0] == "0"
    assert short_id(docker, web) not in res.stdout
    # but the address works
    ip = inspect(docker, web)["NetworkSettings"]["IPAddress"]
    assert ip and inspect(docker, web)["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ip
    assert ok(lab.run("busybox", "wget", "-qO-", f"http://{ip}/hostname")).strip() == short_id(docker, web)


# --- ports -----------------------------------------------------------------------------------------


def test_published_port_reachable_from_the_host(docker: Callable[..., Run], lab: Lab) -> None:
    port = free_port()
    web = lab.httpd("web", "-p", f"127.0.0.1:{port}:80")
    assert http_get(f"http://127.0.0.1:{port}/hostname").strip() == short_id(docker, web)
    assert ok(docker("port", web)).strip() == f"80/tcp -> 127.0.0.1:{port}"
    assert ok(docker("port", web, "80")).strip() == f"127.0.0.1:{port}"
    ports = inspect(docker, web)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    ps = ok(docker("ps", "--filter", f"name={web}", "--format", "{{.Ports}}")).strip()
    assert ps == f"127.0.0.1:{port}->80/tcp"


def test_publish_all(docker: Callable[..., Run], lab: Lab) -> None:
    web = lab.httpd("web", "-P", "--expose", "80", "--expose", "90/udp")
    ports = inspect(docker, web)["NetworkSettings"]["Ports"]
    assert set(ports) == {"80/tcp", "90/udp"}
    host_port = int(ports["80/tcp"][0]["HostPort"])
    assert ports["80/tcp"][0]["HostIp"] == "0.0.0.0" and host_port > 1024
    assert http_get(f"http://127.0.0.1:{host_port}/hostname").strip() == short_id(docker, web)
    listed = ok(docker("port", web)).splitlines()
    assert f"80/tcp -> 0.0.0.0:{host_port}" in listed


def test_exposed_but_unpublished_port(docker: Callable[..., Run], lab: Lab) -> None:
    name = lab.name("c")
    ok(docker("run", "-d", "--name", name, "--expose", "7000", "busybox", "sleep", "60"))
    assert inspect(docker, name)["NetworkSettings"]["Ports"] == {"7000/tcp": None}
    assert ok(docker("port", name)) == ""


def test_port_conflict(docker: Callable[..., Run], lab: Lab, daemon: Daemon) -> None:
    port = free_port()
    lab.httpd("first", "-p", f"127.0.0.1:{port}:80")
    second = lab.name("second")
    res = docker("run", "-d", "--name", second, "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "60")
    assert res.rc != 0
    assert "driver failed programming external connectivity on endpoint" in res.stderr
    assert f"127.0.0.1:{port}" in res.stderr
    state = inspect(docker, second)["State"]
    assert state["Running"] is False and state["Status"] == "created"
    settings = inspect(docker, second)["NetworkSettings"]
    assert settings["Networks"]["bridge"]["IPAddress"] == ""
    # a port some other program holds gives an error as well, and nothing is half-started
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        third = lab.name("third")
        res = docker("run", "-d", "--name", third, "-p", f"127.0.0.1:{taken}:80", "busybox", "sleep", "60")
        assert res.rc != 0 and str(taken) in res.stderr
    assert inspect(docker, third)["State"]["Status"] == "created"
    # once the first is gone, the port can be published again
    ok(docker("rm", "-f", lab.containers[0]))
    ok(docker("start", second))
    assert inspect(docker, second)["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}
    ]


# --- isolation, internal, connect ------------------------------------------------------------------


def test_networks_are_isolated(docker: Callable[..., Run], lab: Lab) -> None:
    a = lab.network("a")
    b = lab.network("b")
    web = lab.httpd("web", "--network", a)
    ip = inspect(docker, web)["NetworkSettings"]["Networks"][a]["IPAddress"]
    with ip_forwarding():
        # sh must not exec the command: as PID 1, wget would ignore timeout's SIGTERM.
        fetch = f"timeout 3 wget -qO- http://{ip}/hostname; exit $?"
        same = ok(lab.run("--network", a, "busybox", "sh", "-c", fetch))
        assert same.strip() == short_id(docker, web)
        other = lab.run("--network", b, "busybox", "sh", "-c", fetch)
        assert other.rc != 0
        by_name = lab.run("--network", b, "busybox", "nslookup", web, "127.0.0.11")
        assert by_name.rc != 0


def test_internal_network_has_no_route_out(docker: Callable[..., Run], lab: Lab) -> None:
    net = lab.network("i", "--internal")
    web = lab.httpd("web", "--network", net)
    routes = ok(lab.run("--network", net, "busybox", "ip", "route")).splitlines()
    assert routes and not any(r.startswith("default") for r in routes)
    # but the network itself works, names included
    out = ok(lab.run("--network", net, "busybox", "wget", "-qO-", f"http://{web}/hostname"))
    assert out.strip() == short_id(docker, web)


def test_connect_and_disconnect_a_running_container(docker: Callable[..., Run], lab: Lab) -> None:
    net = lab.network("n", "--subnet", f"10.{240 + next(_counter) % 10}.{next(_counter) % 250}.0/24")
    subnet = json.loads(ok(docker("network", "inspect", net)))[0]["IPAM"]["Config"][0]["Subnet"]
    static_ip = subnet.rsplit(".", 1)[0] + ".77"
    web = lab.httpd("web", "--network", net)
    client = lab.name("client")
    ok(docker("run", "-d", "--name", client, "busybox", "sleep", "120"))
    ok(docker("network", "connect", "--ip", static_ip, "--alias", "cl", net, client))
    settings = inspect(docker, client)["NetworkSettings"]["Networks"]
    assert set(settings) == {"bridge", net}
    assert settings[net]["IPAddress"] == static_ip and "cl" in settings[net]["Aliases"]
    assert (
        ok(docker("exec", client, "ip", "-4", "-o", "addr", "show", "eth1")).split()[3] == f"{static_ip}/24"
    )
    assert ok(docker("exec", client, "wget", "-qO-", f"http://{web}/hostname")).strip() == short_id(
        docker, web
    )
    # the new alias resolves for the others on the network
    assert static_ip in ok(lab.run("--network", net, "busybox", "nslookup", "cl", "127.0.0.11"))
    containers = json.loads(ok(docker("network", "inspect", net)))[0]["Containers"]
    assert inspect(docker, client)["Id"] in containers

    ok(docker("network", "disconnect", net, client))
    assert set(inspect(docker, client)["NetworkSettings"]["Networks"]) == {"bridge"}
    links = ok(docker("exec", client, "ip", "-o", "link")).splitlines()
    assert not any(": eth1" in line for line in links)
    res = docker("network", "disconnect", net, client)
    assert res.rc != 0 and "is not connected to" in res.stderr
    # the address is free again
    other = lab.name("other")
    ok(docker("run", "-d", "--name", other, "--network", net, "--ip", static_ip, "busybox", "sleep", "60"))


def test_network_in_use_cannot_be_removed(docker: Callable[..., Run], lab: Lab) -> None:
    net = lab.network("n")
    lab.httpd("web", "--network", net)
    res = docker("network", "rm", net)
    assert res.rc != 0 and f"network {net} has active endpoints (" in res.stderr


def test_container_network_mode(docker: Callable[..., Run], lab: Lab) -> None:
    web = lab.httpd("web")
    out = ok(lab.run("--network", f"container:{web}", "busybox", "wget", "-qO-", "http://127.0.0.1/hostname"))
    assert out.strip() == short_id(docker, web)


def test_none_has_loopback_only(docker: Callable[..., Run], lab: Lab) -> None:
    out = ok(lab.run("--network", "none", "busybox", "ip", "-o", "link"))
    names = [line.split(":")[1].strip() for line in out.splitlines()]
    assert names == ["lo"]
    assert "UP" in out


# --- /etc files ------------------------------------------------------------------------------------


def test_hosts_and_resolv_conf(docker: Callable[..., Run], lab: Lab) -> None:
    name = lab.name("c")
    out = ok(
        docker(
            "run", "--name", name, "--hostname", "box", "--domainname", "example.test",
            "--add-host", "gw:host-gateway", "--add-host", "static.test:10.1.2.3",
            "--dns", "10.9.9.9", "--dns-search", "corp.test", "--dns-option", "timeout:1",
            "busybox", "sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf",
        )
    )  # fmt: skip
    hosts, resolv = out.split("---\n")
    settings = inspect(docker, name)["NetworkSettings"]
    lines = hosts.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    gateway = json.loads(ok(docker("network", "inspect", "bridge")))[0]["IPAM"]["Config"][0]["Gateway"]
    assert f"{gateway}\tgw" in lines
    assert "10.1.2.3\tstatic.test" in lines
    own = lines[-1].split("\t")
    assert own[1] == "box.example.test box" and own[0].count(".") == 3
    assert settings["Networks"]["bridge"]["IPAddress"] == ""  # none kept after the exit, as on dockerd
    assert resolv.splitlines() == ["nameserver 10.9.9.9", "search corp.test", "options timeout:1"]


# --- daemon restart ----------------------------------------------------------------------------------


def test_daemon_restart_with_networks_and_running_containers(
    own_daemon: tuple[Any, Callable[..., Run]],
) -> None:
    proc, run = own_daemon
    port = free_port()
    try:
        ok(run("network", "create", "--subnet", "10.233.5.0/24", "app"))
        ok(run("run", "-d", "--name", "web", "--restart", "always", "--stop-timeout", "1", "--network", "app",
               "-p", f"127.0.0.1:{port}:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc"))  # fmt: skip
        ok(run("run", "-d", "--name", "client", "--restart", "always", "--stop-timeout", "1",
               "--network", "app", "busybox", "sleep", "600"))  # fmt: skip
        before = ok(run("inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", "web")).strip()
        os.kill(proc.pid, signal.SIGTERM)
        proc.proc.wait(timeout=60)
        assert not list((proc.exec_root / "netns").glob("*")), "sandboxes left after the daemon stopped"
        proc.start()
        web_id = ok(run("inspect", "-f", "{{.Id}}", "web")).strip()[:12]
        assert http_get(f"http://127.0.0.1:{port}/hostname").strip() == web_id
        assert ok(run("exec", "client", "wget", "-qO-", "http://web/hostname")).strip() == web_id
        after = ok(run("inspect", "-f", "{{.NetworkSettings.Networks.app.IPAddress}}", "web")).strip()
        assert after.startswith("10.233.5.") and before.startswith("10.233.5.")
        assert ok(run("network", "inspect", "-f", "{{len .Containers}}", "app")).strip() == "2"
    finally:
        with contextlib.suppress(Exception):
            run("rm", "-f", "web", "client")
            run("network", "rm", "app")


def test_masquerade_rule_for_user_networks(docker: Callable[..., Run], lab: Lab, daemon: Daemon) -> None:
    net = lab.network("m", "--subnet", "10.234.8.0/24")
    lab.httpd("web", "--network", net)
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout
    assert any("10.234.8.0/24" in r and "MASQUERADE" in r for r in rules.splitlines())
