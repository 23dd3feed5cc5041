"""More of the docker CLI's container surface: start-error texts, resize of a stopped container,
--device, --group-add, `docker update` seen in the cgroup, the init-layer entries (/.dockerenv,
/etc/hostname, ... in the container and in `docker export`), `ps --filter network=<id>` for the
pre-defined networks, and `ps --format` / `-s`.

Checked against the reference dockerd 20.10 too (SKIFF_TEST_DOCKER_HOST=...); where dockerd 28
(which skiff follows) words something differently, the test branches on `daemon.is_docker`.
Every container carries this module's case label and is removed at the end.
"""

from __future__ import annotations

import json
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import CASE_LABEL, CaseContainers, Daemon, Run, ok

# The reference dockerd runs with --ip-forward=false and warns about it on every run.
_FORWARDING_WARNING = "WARNING: IPv4 forwarding is disabled. Networking will not work.\n"
INIT_FILES = {".dockerenv", "dev/console", "etc/hostname", "etc/hosts", "etc/resolv.conf"}
INIT_DIRS = {"dev", "dev/pts", "dev/shm", "proc", "sys"}


def err(res: Run) -> str:
    return res.stderr.replace(_FORWARDING_WARNING, "")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class Containers(CaseContainers):
    def output(self, *args: str) -> str:
        """`docker run --rm` output (stdout and stderr, without the reference's forwarding warning)."""
        res = self.docker("run", "--rm", "--name", self.name("out"), *self.label, *args)
        assert res.rc == 0, res
        return res.stdout + err(res)


@pytest.fixture(scope="module")
def ctrs(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Containers]:
    made = Containers(docker, f"more-{session_token}")
    yield made
    made.cleanup()


def cid_of(docker: Callable[..., Run], name: str) -> str:
    return ok(docker("inspect", "-f", "{{.Id}}", name)).strip()


# --- start errors ------------------------------------------------------------------------------------


def test_start_error_texts_and_exit_codes(
    docker: Callable[..., Run], ctrs: Containers, daemon: Daemon
) -> None:
    # dockerd >= 25 wraps containerd's text once more; the CLI picks 125/126/127 by substring.
    prefix = "" if daemon.is_docker else "failed to create task for container: "
    runc = "failed to create shim task: OCI runtime create failed: runc create failed: "
    res = docker("run", "--rm", "--name", ctrs.name("nope"), *ctrs.label, "busybox", "nope")
    assert res.rc == 127
    assert err(res) == (
        f"docker: Error response from daemon: {prefix}{runc}unable to start container process: "
        'exec: "nope": executable file not found in $PATH: unknown\n\n'
        "Run 'docker run --help' for more information\n"
    )
    res = docker("run", "--rm", "--name", ctrs.name("dir"), *ctrs.label, "busybox", "/etc")
    assert res.rc == 126 and "permission denied" in res.stderr
    name = ctrs.create("start", cmd=("/etc",))
    res = docker("start", name)
    message = f'{prefix}{runc}unable to start container process: exec: "/etc": permission denied: unknown'
    assert (res.rc, err(res)) == (
        1,
        f"Error response from daemon: {message}\nError: failed to start containers: {name}\n",
    )
    state = ok(docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}|{{.State.Error}}", name))
    assert state == f"created 126|{message}\n"
    res = docker("run", "--name", ctrs.name("bad-opt"), *ctrs.label, "--memory", "1k", "busybox", "true")
    assert res.rc == 125


# --- resize ------------------------------------------------------------------------------------------


def test_resize_of_a_container_that_is_not_running(
    docker: Callable[..., Run], ctrs: Containers, api: httpx.Client, daemon: Daemon
) -> None:
    idle = ctrs.create("rsz")
    cid = cid_of(docker, idle)
    res = api.post(f"/containers/{idle}/resize", params={"h": "24", "w": "80"})
    word = "Container" if daemon.is_docker else "container"
    assert (res.status_code, res.json()) == (409, {"message": f"{word} {cid} is not running"})
    running = ctrs.run("rsz-up")
    res = api.post(f"/containers/{running}/resize", params={"h": "24", "w": "80"})
    assert res.status_code == 200  # no TTY: nothing to size, still fine
    res = api.post(f"/containers/{running}/resize", params={"h": "x", "w": "80"})
    assert res.status_code == 400
    res = api.post("/containers/nope-not-there/resize", params={"h": "24", "w": "80"})
    assert (res.status_code, res.json()["message"]) == (404, "No such container: nope-not-there")


# --- --device / --group-add ---------------------------------------------------------------------------


def test_device_is_visible_in_the_container(ctrs: Containers) -> None:
    script = 'stat -c "%t,%T %F %a" /dev/mynull; echo x > /dev/mynull && echo written; cat /dev/mynull'
    out = ctrs.output("--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c", script)
    assert out == "1,3 character special file 666\nwritten\n"
    out = ctrs.output("--device", "/dev/zero", "busybox", "sh", "-c", "head -c 3 /dev/zero | od -An -tx1")
    assert out.split() == ["00", "00", "00"]


def test_group_add_shows_in_id(ctrs: Containers) -> None:
    assert (
        ctrs.output("--group-add", "1234", "busybox", "id") == "uid=0(root) gid=0(root) groups=0(root),1234\n"
    )
    out = ctrs.output("--group-add", "1234", "--user", "1000:1000", "busybox", "id")
    assert out == "uid=1000(app) gid=1000(app) groups=1000(app),1234\n"
    # a group name is resolved through the image's /etc/group
    out = ctrs.output("--group-add", "app", "busybox", "id", "-G")
    assert out == "0 1000\n"


# --- update ------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not Path("/sys/fs/cgroup/cpu/cpu.shares").exists(), reason="cgroup v1 cpu controller paths"
)
def test_update_changes_the_cgroup_live(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("upd")
    read = (
        "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes"
    )
    before = lines(ok(docker("exec", name, "sh", "-c", read)))
    assert before[:3] == ["1024", "max", "-1"]
    res = docker(
        "update",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "99",
        "--cpus",
        "0.5",
        "--memory-reservation",
        "10m",
        name,
    )
    assert lines(ok(res))[0] == name
    assert lines(ok(docker("exec", name, "sh", "-c", read))) == ["512", "99", "50000", "10485760"]
    template = "{{.HostConfig.CpuShares}} {{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}}"
    assert ok(docker("inspect", "-f", template, name)) == "512 99 500000000\n"
    # the cgroup of a container's exec'd process is the container's: the limit applies to it too
    assert ok(docker("exec", name, "cat", "/sys/fs/cgroup/pids/pids.max")) == "99\n"


# --- init layer --------------------------------------------------------------------------------------


def _export(docker: Callable[..., Run], name: str, path: Path) -> dict[str, tarfile.TarInfo]:
    assert docker("export", name, stdout_file=path).rc == 0
    with tarfile.open(path) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def test_init_layer_entries(docker: Callable[..., Run], ctrs: Containers, tmp_path: Path) -> None:
    out = ctrs.output("busybox", "sh", "-c", "stat -c '%n %F %a %s' /.dockerenv; readlink /etc/mtab")
    assert out == "/.dockerenv regular empty file 755 0\n/proc/mounts\n"
    for name in (ctrs.create("exp-new"), ctrs.run("exp-up")):
        members = _export(docker, name, tmp_path / f"{name}.tar")
        for path in INIT_FILES:
            assert members[path].isreg() and members[path].size == 0, path
            assert stat.S_IMODE(members[path].mode) == 0o755, path
        assert all(members[path].isdir() for path in INIT_DIRS)
        assert members["etc/mtab"].issym() and members["etc/mtab"].linkname == "/proc/mounts"
        assert members["etc/passwd"].size > 0
    # none of it is a change of the container, nor part of its size
    fresh = ctrs.create("exp-diff")
    assert ok(docker("diff", fresh)) == ""
    assert ok(
        docker("ps", "-as", *ctrs.scope, "--filter", f"name={fresh}", "--format", "{{.Size}}")
    ).startswith("0B (virtual ")


# --- ps ------------------------------------------------------------------------------------------------


def test_ps_network_filter_by_predefined_network_id(docker: Callable[..., Run], ctrs: Containers) -> None:
    on_bridge = ctrs.run("net-b")
    on_none = ctrs.run("net-n", "--network", "none")
    on_host = ctrs.run("net-h", "--network", "host")
    never_started = ctrs.create("net-c")
    ids = {}
    for name, net in ((on_bridge, "bridge"), (on_none, "none"), (on_host, "host")):
        ids[net] = ok(
            docker("inspect", "-f", f"{{{{.NetworkSettings.Networks.{net}.NetworkID}}}}", name)
        ).strip()
        assert re.fullmatch(r"[0-9a-f]{64}", ids[net]), (net, ids[net])
    assert len(set(ids.values())) == 3
    assert (
        ok(docker("inspect", "-f", "{{.NetworkSettings.Networks.bridge.NetworkID}}", never_started)) == "\n"
    )

    mine = {on_bridge, on_none, on_host, never_started}

    def ps(value: str) -> list[str]:
        listed = ok(docker("ps", "-a", *ctrs.scope, "--filter", f"network={value}", "--format", "{{.Names}}"))
        return [name for name in lines(listed) if name in mine]

    assert ps(ids["bridge"]) == [on_bridge]
    assert ps(ids["bridge"][:5]) == [on_bridge]
    assert ps(ids["none"][:12]) == [on_none]
    assert ps(ids["host"]) == [on_host]
    assert ps("bridge") == [never_started, on_bridge]
    assert ps("none") == [on_none]
    assert ps("f" * 64 if not ids["bridge"].startswith("f") else "e" * 64) == []


def test_ps_format_fields_and_size(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("fmt", "--label", "a=b", cmd=("sh", "-c", "echo hi > /tmp/f; sleep 600"))
    cid = cid_of(docker, name)
    scope = [*ctrs.scope, "--filter", f"name={name}"]
    for _ in range(50):  # the file is written right after the start
        size = ok(docker("ps", "-s", *scope, "--format", "{{.Size}}")).strip()
        if size.startswith("3B"):
            break
    assert re.fullmatch(r"3B \(virtual \d+(\.\d+)?MB\)", size), size
    template = (
        "{{.ID}}|{{.Image}}|{{.Command}}|{{.Names}}|{{.Labels}}|{{.Mounts}}|{{.LocalVolumes}}|{{.State}}"
    )
    out = ok(docker("ps", *scope, "--format", template + '|{{.Label "a"}}|{{.Networks}}'))
    fields = out.rstrip("\n").split("|")
    # the CLI joins the labels in Go map order
    assert sorted(fields.pop(4).split(",")) == sorted(["a=b", f"{CASE_LABEL}={ctrs.case}"])
    assert fields == [cid[:12], "busybox", '"sh -c \'echo hi > /t…"', name, "", "0", "running", "b", "bridge"]
    created_at = ok(docker("ps", *scope, "--format", "{{.CreatedAt}}")).strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \w+", created_at), created_at
    running_for = ok(docker("ps", *scope, "--format", "{{.RunningFor}}")).strip()
    assert re.fullmatch(r"(Less than a second|\d+ seconds?|About a minute) ago", running_for), running_for
    table = lines(ok(docker("ps", "-s", *scope)))
    assert re.match(r"CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES\s+SIZE$", table[0])
    assert table[1].startswith(cid[:12]) and table[1].endswith(size)
    custom = lines(ok(docker("ps", "-s", *scope, "--format", "table {{.Names}}\t{{.Size}}")))
    assert re.match(r"NAMES\s+SIZE$", custom[0]) and custom[1].split(None, 1) == [name, size]
    row = json.loads(ok(docker("ps", "-s", *scope, "--format", "{{json .}}")))
    assert set(row) >= {
        "Command", "CreatedAt", "ID", "Image", "Labels", "LocalVolumes", "Mounts", "Names", "Networks",
        "Ports", "RunningFor", "Size", "State", "Status",
    }  # fmt: skip
    assert (row["ID"], row["Size"], row["Networks"], row["State"]) == (cid[:12], size, "bridge", "running")
    quiet = lines(ok(docker("ps", "-q", "-s", *scope)))
    assert quiet == [cid[:12]]
