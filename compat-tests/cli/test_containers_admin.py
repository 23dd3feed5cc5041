"""The docker CLI's container admin commands: ps (filters, -a/-n/-l/-q/-s, --format), inspect
templates, rename, pause/unpause, top, diff, export, update and container prune.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Every container a test
makes carries this module's case label, and every listing is scoped by it, so a shared daemon's
other containers never matter. Where dockerd 20.10 words an error differently from dockerd 28
(which skiff follows), the test branches on `daemon.is_docker`.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CaseContainers, Daemon, Run, ok

Fleet = dict[str, str]
FS_SCRIPT = "echo hi > /tmp/x; rm /bin/ls; mkdir -p /newdir/sub; echo a > /newdir/sub/f; rm -rf /home"
FS_DIFF = [
    "C /tmp",
    "A /tmp/x",
    "C /bin",
    "D /bin/ls",
    "A /newdir",
    "A /newdir/sub",
    "A /newdir/sub/f",
    "D /home",
]
# cgroup v1 (memory controller mounted for the container) or v2.
READ_MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class Containers(CaseContainers):
    """This module's containers; a foreground run (``detach=False``) may fail, as some tests want."""

    def run(self, hint: str, *args: str, cmd: tuple[str, ...] = ("sleep", "600"), detach: bool = True) -> str:
        if detach:
            return super().run(hint, *args, cmd=cmd)
        name = self.name(hint)
        self.docker("run", "--name", name, *self.label, *args, "busybox", *cmd)
        return name

    def ps(self, *args: str) -> list[str]:
        return lines(ok(self.docker("ps", *self.scope, "--format", "{{.Names}}", *args)))


@pytest.fixture(scope="module")
def ctrs(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Containers]:
    made = Containers(docker, f"admin-{session_token}")
    yield made
    made.cleanup()


def cid_of(docker: Callable[..., Run], name: str) -> str:
    return ok(docker("inspect", "-f", "{{.Id}}", name)).strip()


# --- ps ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(docker: Callable[..., Run], ctrs: Containers) -> dict[str, str]:
    """Oldest to newest: exited 0, exited 3, created, running (web), running (api)."""
    names = {
        "ok": ctrs.run("ok", detach=False, cmd=("true",)),
        "bad": ctrs.run("bad", detach=False, cmd=("sh", "-c", "exit 3")),
        "new": ctrs.create("new", "--label", "tier=back"),
        "web": ctrs.run("web", "--label", "tier=front", "--label", "app=web"),
        "api": ctrs.run("api", "--label", "tier=front"),
    }
    return names


def test_ps_default_all_last_latest(docker: Callable[..., Run], ctrs: Containers, fleet: Fleet) -> None:
    assert ctrs.ps() == [fleet["api"], fleet["web"]]
    assert ctrs.ps("-a") == [fleet[k] for k in ("api", "web", "new", "bad", "ok")]
    assert ctrs.ps("-n", "3") == [fleet[k] for k in ("api", "web", "new")]
    assert ctrs.ps("-l") == [fleet["api"]]
    quiet = lines(ok(docker("ps", "-q", *ctrs.scope)))
    assert quiet == [cid_of(docker, fleet[k])[:12] for k in ("api", "web")]
    full = lines(ok(docker("ps", "-aq", "--no-trunc", *ctrs.scope)))
    assert len(full) == 5 and all(re.fullmatch(r"[0-9a-f]{64}", i) for i in full)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["status=exited"], ["bad", "ok"]),
        (["status=created"], ["new"]),
        (["status=running"], ["api", "web"]),
        (["exited=0"], ["ok"]),
        (["exited=3"], ["bad"]),
        (["label=tier"], ["api", "web", "new"]),
        (["label=tier=front", "label=app=web"], ["web"]),
        (["health=none", "status=running"], ["api", "web"]),
        (["is-task=false", "status=exited"], ["bad", "ok"]),
        (["is-task=true"], []),
        (["ancestor=busybox"], ["api", "web", "new", "bad", "ok"]),
        (["ancestor=busybox:latest", "status=created"], ["new"]),
    ],
)
def test_ps_filters(ctrs: Containers, fleet: Fleet, filters: list[str], expected: list[str]) -> None:
    args = [a for f in filters for a in ("--filter", f)]
    assert ctrs.ps("-a", *args) == [fleet[k] for k in expected]


def test_ps_name_id_before_since(docker: Callable[..., Run], ctrs: Containers, fleet: Fleet) -> None:
    assert ctrs.ps("-a", "--filter", f"name={fleet['web']}") == [fleet["web"]]
    assert ctrs.ps("-a", "--filter", f"name=^/{fleet['web']}$") == [fleet["web"]]
    assert ctrs.ps("-a", "--filter", f"name=^{fleet['new']}$") == [fleet["new"]]
    web_id = cid_of(docker, fleet["web"])
    assert ctrs.ps("-a", "--filter", f"id={web_id[:10]}") == [fleet["web"]]
    assert ctrs.ps("-a", "--filter", f"id={web_id[5:15]}") == []  # not a prefix
    assert ctrs.ps("-a", "--filter", f"before={fleet['new']}") == [fleet["bad"], fleet["ok"]]
    assert ctrs.ps("-a", "--filter", f"since={fleet['new']}") == [fleet["api"], fleet["web"]]
    assert ctrs.ps("--filter", f"since={web_id}") == [fleet["api"]]


def test_ps_filter_errors(docker: Callable[..., Run], daemon: Daemon, fleet: Fleet) -> None:
    invalid = "Invalid filter" if daemon.is_docker else "invalid filter"
    res = docker("ps", "--filter", "foo=bar")
    assert (res.rc, res.stderr) == (1, f"Error response from daemon: {invalid} 'foo'\n")
    res = docker("ps", "--filter", "status=foo")
    assert (res.rc, res.stderr) == (1, f"Error response from daemon: {invalid} 'status=foo'\n")
    res = docker("ps", "--filter", "health=sick")
    assert res.stderr == "Error response from daemon: Unrecognised filter value for health: sick\n"


def test_ps_format_templates(docker: Callable[..., Run], ctrs: Containers, fleet: Fleet) -> None:
    template = '{{.Image}}|{{.Command}}|{{.State}}|{{.Status}}|{{.Label "tier"}}|{{.Ports}}|{{.Mounts}}'
    out = ok(docker("ps", "-a", *ctrs.scope, "--filter", f"name={fleet['bad']}", "--format", template))
    image, command, state, status, tier, ports, mounts = out.rstrip("\n").split("|")
    assert (image, command, state) == ("busybox", "\"sh -c 'exit 3'\"", "exited")
    assert (tier, ports, mounts) == ("", "", "")
    assert re.fullmatch(r"Exited \(3\) (Less than a second|1 second|\d+ seconds) ago", status), status
    out = ok(docker("ps", *ctrs.scope, "--filter", f"name={fleet['web']}", "--format", "{{json .}}"))
    row = json.loads(out)
    assert row["Names"] == fleet["web"] and row["State"] == "running" and row["Status"].startswith("Up ")
    assert "app=web" in row["Labels"] and row["Networks"] in ("bridge", "none", "")
    table = lines(ok(docker("ps", *ctrs.scope, "--filter", f"name={fleet['web']}")))
    assert re.match(r"CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$", table[0])
    assert table[1].endswith(fleet["web"]) and '"sleep 600"' in table[1]
    sized = ctrs.ps("-s", "--filter", f"name={fleet['web']}", "--format", "{{.Size}}")
    assert re.fullmatch(r"\d+(\.\d+)?k?B \(virtual \d+(\.\d+)?[kM]B\)", sized[0]), sized


# --- inspect ---------------------------------------------------------------------------------------


def test_inspect_templates(docker: Callable[..., Run], ctrs: Containers, fleet: Fleet) -> None:
    web = fleet["web"]
    template = (
        "{{.State.Status}} {{.State.Running}} {{.Config.Image}} {{.Name}} "
        "{{.HostConfig.RestartPolicy.Name}} {{json .Mounts}} {{.State.ExitCode}}"
    )
    out = ok(docker("inspect", "-f", template, web))
    assert out == f"running true busybox /{web} no [] 0\n"
    template = "{{.State.Status}} {{.State.ExitCode}} {{.State.StartedAt}}"
    out = ok(docker("inspect", "-f", template, fleet["bad"]))
    status, code, started = out.split()
    assert (status, code) == ("exited", "3") and started != "0001-01-01T00:00:00Z"
    doc = json.loads(ok(docker("inspect", "-s", fleet["new"])))[0]
    assert doc["State"]["Status"] == "created" and doc["SizeRw"] == 0 and doc["SizeRootFs"] > 0
    assert doc["GraphDriver"]["Name"] == "overlay2" and doc["Config"]["Labels"]["tier"] == "back"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["Image"])
    res = docker("inspect", "--type", "container", "nope-not-there")
    assert res.rc == 1 and "No such container: nope-not-there" in res.stderr


# --- rename / pause / top --------------------------------------------------------------------------


def test_rename(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("ren")
    new = name + "-x"
    assert ok(docker("rename", name, new)) == ""
    ctrs.made.append(new)
    assert ctrs.ps("--filter", f"name={new}") == [new]
    assert ok(docker("inspect", "-f", "{{.Name}}", new)) == f"/{new}\n"
    res = docker("rename", new, new)
    assert res.rc == 1
    assert res.stderr == (
        "Error response from daemon: Renaming a container with the same name as its current name\n"
        f"Error: failed to rename container named {new}\n"
    )
    other = ctrs.create("ren2")
    res = docker("rename", new, other)
    assert res.rc == 1
    assert res.stderr.startswith(
        "Error response from daemon: Error when allocating new name: Conflict. "
        f'The container name "/{other}" is already in use by container'
    )


def test_pause_unpause(docker: Callable[..., Run], ctrs: Containers, daemon: Daemon) -> None:
    name = ctrs.run("pz")
    cid = cid_of(docker, name)
    assert ok(docker("pause", name)) == f"{name}\n"
    assert ok(docker("inspect", "-f", "{{.State.Status}} {{.State.Paused}} {{.State.Running}}", name)) == (
        "paused true true\n"
    )
    (status,) = ctrs.ps("--filter", f"name={name}", "--format", "{{.Status}}")
    assert status.endswith("(Paused)")
    assert ctrs.ps("--filter", "status=paused") == [name]
    res = docker("pause", name)
    assert res.stderr == f"Error response from daemon: Container {cid} is already paused\n"
    assert ok(docker("unpause", name)) == f"{name}\n"
    assert ok(docker("inspect", "-f", "{{.State.Status}}", name)) == "running\n"
    res = docker("unpause", name)
    assert res.stderr == f"Error response from daemon: Container {cid} is not paused\n"
    idle = ctrs.create("pz-idle")
    res = docker("pause", idle)
    not_running = "Container" if daemon.is_docker else "container"
    assert res.stderr == f"Error response from daemon: {not_running} {cid_of(docker, idle)} is not running\n"


def test_top(docker: Callable[..., Run], ctrs: Containers, daemon: Daemon) -> None:
    name = ctrs.run("top", cmd=("sleep", "4321"))
    rows = lines(ok(docker("top", name)))
    assert re.match(r"UID\s+PID\s+PPID\s+C\s+STIME\s+TTY\s+TIME\s+CMD$", rows[0])
    assert len(rows) == 2 and rows[1].startswith("root") and rows[1].endswith("sleep 4321")
    pid = ok(docker("inspect", "-f", "{{.State.Pid}}", name)).strip()
    assert rows[1].split()[1] == pid
    rows = lines(ok(docker("top", name, "-o", "pid,comm")))
    assert rows[1].split() == [pid, "sleep"]
    res = docker("top", name, "-o", "comm")
    assert res.stderr == "Error response from daemon: Couldn't find PID field in ps output\n"
    idle = ctrs.create("top-idle")
    res = docker("top", idle)
    not_running = "Container" if daemon.is_docker else "container"
    assert res.stderr == f"Error response from daemon: {not_running} {cid_of(docker, idle)} is not running\n"


# --- diff / export ---------------------------------------------------------------------------------


def test_diff_and_export(docker: Callable[..., Run], ctrs: Containers, tmp_path: Path) -> None:
    name = ctrs.run(
        "fs",
        detach=False,
        cmd=("sh", "-c", FS_SCRIPT),
    )
    assert sorted(lines(ok(docker("diff", name)))) == sorted(FS_DIFF)
    fresh = ctrs.create("fs-new")
    assert ok(docker("diff", fresh)) == ""
    out = tmp_path / "export.tar"
    assert docker("export", name, stdout_file=out).rc == 0
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        member = tar.extractfile("tmp/x")
        assert member is not None and member.read() == b"hi\n"
    assert {"bin/sh", "etc/passwd", "newdir/sub/f", "proc", "sys"} <= names
    assert "bin/ls" not in names and not any(n == "home" or n.startswith("home/") for n in names)
    res = docker("export", "-o", str(tmp_path / "x.tar"), "nope-not-there")
    assert res.rc == 1 and "No such container: nope-not-there" in res.stderr
    # a never-started container exports its image's files
    assert docker("export", fresh, stdout_file=tmp_path / "fresh.tar").rc == 0
    with tarfile.open(tmp_path / "fresh.tar") as tar:
        assert "bin/ls" in tar.getnames()
    assert tarfile.is_tarfile(io.BytesIO((tmp_path / "fresh.tar").read_bytes()))


# --- update / prune --------------------------------------------------------------------------------


def updated(res: Run) -> str:
    """The name `docker update` prints (the reference daemon adds an IPv4-forwarding warning line)."""
    return lines(ok(res))[0]


def test_update(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("upd")
    assert updated(docker("update", "--memory", "64m", "--memory-swap", "128m", name)) == name
    assert ok(docker("inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}", name)) == (
        "67108864 134217728\n"
    )
    limit = ok(docker("exec", name, "sh", "-c", READ_MEMORY_LIMIT))
    assert limit == "67108864\n"
    assert updated(docker("update", "--memory", "32m", name)) == name
    assert ok(docker("inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}", name)) == (
        "33554432 134217728\n"
    )
    assert updated(docker("update", "--restart", "on-failure:2", "--cpu-shares", "512", name)) == name
    policy = "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
    template = policy + " {{.HostConfig.CpuShares}}"
    out = ok(docker("inspect", "-f", template, name))
    assert out == "on-failure 2 512\n"
    unlimited = ctrs.run("upd2")
    res = docker("update", "--memory", "64m", unlimited)
    assert res.rc == 1
    assert res.stderr == (
        f"Error response from daemon: Cannot update container {cid_of(docker, unlimited)}: "
        "Memory limit should be smaller than already set memoryswap limit, "
        "update the memoryswap at the same time\n"
    )
    res = docker("update", "--memory", "1k", "--memory-swap", "-1", name)
    assert "Minimum memory limit allowed is 6MB" in res.stderr


def test_container_prune_with_label(docker: Callable[..., Run], ctrs: Containers) -> None:
    label = f"org.skiff.test.prune={ctrs.case}"
    keep = ctrs.run("prune-run", "--label", label)
    gone = ctrs.create("prune-gone", "--label", label)
    gone_id = cid_of(docker, gone)
    out = ok(docker("container", "prune", "-f", "--filter", f"label={label}"))
    assert out.startswith(f"Deleted Containers:\n{gone_id}\n\nTotal reclaimed space: ")
    assert ctrs.ps("-a", "--filter", f"label={label}") == [keep]
    out = ok(docker("container", "prune", "-f", "--filter", f"label={label}"))
    assert out == "Total reclaimed space: 0B\n"
