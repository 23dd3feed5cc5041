"""The docker CLI's network verbs: create (--subnet/--gateway/--ip-range/--internal/--label/-o), ls with
filters, inspect, rm, prune, connect/disconnect of a created (not running) container, and the
daemon's texts for missing and pre-defined networks.

Texts were checked against the reference dockerd 20.10. Every test removes the networks and containers
it made, also when it fails; prune only ever runs with this test's own label filter. The kernel
cleanup checks (no skiff bridge after rm and after the daemon stops) run on skiff only.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, Run, ok

_counter = itertools.count()


def bridges() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines() if ":" in line}


class Made:
    def __init__(self, token: str, docker: Callable[..., Run]) -> None:
        self.prefix = f"skn-{token}-{next(_counter)}"
        self.label = f"skiff.test.networks={self.prefix}"
        self.docker = docker
        self.networks: list[str] = []
        self.containers: list[str] = []

    def network(self, suffix: str, *args: str) -> str:
        name = f"{self.prefix}-{suffix}"
        self.networks.append(name)
        ok(self.docker("network", "create", "--label", self.label, *args, name))
        return name

    def cleanup(self) -> None:
        for c in self.containers:
            self.docker("rm", "-f", c)
        for n in self.networks:
            self.docker("network", "rm", n)


@pytest.fixture
def made(docker: Callable[..., Run], session_token: str) -> Iterator[Made]:
    m = Made(session_token[:8], docker)
    yield m
    m.cleanup()


def inspect(docker: Callable[..., Run], name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(ok(docker("network", "inspect", name)))
    assert len(data) == 1
    return data[0]


def test_ls_shows_predefined(docker: Callable[..., Run]) -> None:
    rows = ok(docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")).splitlines()
    for row in ("bridge bridge local", "host host local", "none null local"):
        assert row in rows
    builtin = ok(docker("network", "ls", "-f", "type=builtin", "--format", "{{.Name}}")).split()
    assert sorted(builtin) == ["bridge", "host", "none"]


def test_create_inspect_rm(docker: Callable[..., Run], made: Made, daemon: Daemon) -> None:
    brname = f"skn{os.getpid() % 100000}{next(_counter)}"
    name = made.network(
        "a",
        "--subnet", "10.231.7.0/24", "--gateway", "10.231.7.254", "--ip-range", "10.231.7.128/25",
        "--internal", "--attachable", "--label", "extra=1",
        "-o", f"com.docker.network.bridge.name={brname}", "-o", "com.docker.network.driver.mtu=1400",
    )  # fmt: skip
    net = inspect(docker, name)
    assert net["Name"] == name and net["Driver"] == "bridge" and net["Scope"] == "local"
    assert net["Internal"] is True and net["Attachable"] is True and net["Ingress"] is False
    assert net["IPAM"]["Driver"] == "default"
    assert net["IPAM"]["Config"] == [
        {"Subnet": "10.231.7.0/24", "IPRange": "10.231.7.128/25", "Gateway": "10.231.7.254"}
    ]
    assert net["Labels"] == {made.label.split("=")[0]: made.prefix, "extra": "1"}
    assert net["Options"] == {
        "com.docker.network.bridge.name": brname,
        "com.docker.network.driver.mtu": "1400",
    }
    assert net["Containers"] == {} and net["ConfigFrom"] == {"Network": ""}
    if not daemon.is_docker:
        assert brname in bridges()
    # by ID prefix too
    assert inspect(docker, net["Id"][:10])["Name"] == name

    res = docker("network", "create", name)
    assert res.rc == 1 and f"network with name {name} already exists" in res.stderr

    listed = ok(
        docker("network", "ls", "-f", f"label={made.label}", "-f", "label=extra=1", "--format", "{{.Name}}")
    )
    assert listed.split() == [name]
    assert name in ok(
        docker("network", "ls", "-f", "type=custom", "-f", "driver=bridge", "--format", "{{.Name}}")
    )

    assert ok(docker("network", "rm", name)).strip() == name
    made.networks.remove(name)
    res = docker("network", "inspect", name)
    assert res.rc == 1 and f"network {name} not found" in res.stderr
    if not daemon.is_docker:
        # Only this network's bridge is checked: other engines on the host make and remove theirs.
        assert brname not in bridges()


def test_errors(docker: Callable[..., Run]) -> None:
    res = docker("network", "inspect", "skn-no-such-network")
    assert res.rc == 1 and "Error response from daemon: network skn-no-such-network not found" in res.stderr
    for name in ("bridge", "host", "none"):
        res = docker("network", "rm", name)
        assert res.rc == 1
        assert (
            f"Error response from daemon: {name} is a pre-defined network and cannot be removed" in res.stderr
        )


def test_prune_with_label(docker: Callable[..., Run], made: Made) -> None:
    a = made.network("p1")
    b = made.network("p2")
    out = ok(docker("network", "prune", "-f", "--filter", f"label={made.label}"))
    assert out.startswith("Deleted Networks:\n")
    assert sorted(out.split()[2:]) == sorted([a, b])
    made.networks.clear()
    assert ok(docker("network", "ls", "-q", "-f", f"label={made.label}")) == ""


def test_connect_disconnect_created_container(
    docker: Callable[..., Run], made: Made, busybox_tar: Path
) -> None:
    ok(docker("load", "-i", busybox_tar))
    net = made.network("c")
    cname = f"{made.prefix}-ctr"
    made.containers.append(cname)
    ok(docker("create", "--name", cname, "busybox", "true"))
    ok(docker("network", "connect", "--alias", "web", net, cname))
    networks = json.loads(ok(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", cname)))
    assert set(networks) == {"bridge", net}
    assert "web" in (networks[net]["Aliases"] or [])
    # A stopped container's endpoint settings are replaced, not refused (dockerd 20.10).
    ok(docker("network", "connect", net, cname))
    ok(docker("network", "disconnect", net, cname))
    networks = json.loads(ok(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", cname)))
    assert set(networks) == {"bridge"}


def test_daemon_stop_removes_bridges(own_daemon: tuple[Any, Callable[..., Run]]) -> None:
    """A daemon of its own: networks survive a restart as records, bridges do not outlive the daemon."""
    proc, cli = own_daemon
    nid = ok(cli("network", "create", "--subnet", "10.232.9.0/24", "skn-own")).strip()
    ok(cli("run", "--rm", "busybox", "true"))  # makes the default bridge too
    assert {f"br-{nid[:12]}", proc.bridge} <= bridges()
    proc.stop()
    assert not {f"br-{nid[:12]}", proc.bridge} & bridges()
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert f"br-{nid[:12]}" not in rules
