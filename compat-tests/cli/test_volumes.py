"""The docker CLI's volumes and mounts: volume create/ls/inspect/rm/prune, -v and --mount in all their
forms, copy-up, read-only mounts, bind mounts both ways, tmpfs sizes, --volumes-from, rm -v,
ps --filter volume= and the daemon's texts for bad mount requests.

Expectations were checked against the reference dockerd (SKIFF_TEST_DOCKER_HOST=...); where dockerd
23+ differs from 20.10 (the anonymous-volume label, prune's anonymous-only default) the test says so.
On a shared daemon nothing is pruned without this test's own label filter. Every test removes the
containers (with their anonymous volumes), volumes and host directories it made, also when it fails.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, Run, ok

_counter = itertools.count()
_FORWARDING_WARNING = "WARNING: IPv4 forwarding is disabled. Networking will not work.\n"


def err(res: Run) -> str:
    return res.stderr.replace(_FORWARDING_WARNING, "")


class Made:
    """Unique names for one test's containers and volumes; all removed afterwards."""

    def __init__(self, token: str, docker: Callable[..., Run]) -> None:
        self.prefix = f"skv-{token}-{next(_counter)}"
        self.label = f"org.skiff.test.volumes={self.prefix}"
        self.docker = docker
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def container(self, suffix: str = "c") -> str:
        name = f"{self.prefix}-{suffix}"
        self.containers.append(name)
        return name

    def volume(self, suffix: str = "v") -> str:
        name = f"{self.prefix}-{suffix}"
        self.volumes.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.containers:
            self.docker("rm", "-f", "-v", name)
        for name in self.volumes:
            self.docker("volume", "rm", "-f", name)
        labelled = self.docker("volume", "ls", "-q", "--filter", f"label={self.label}")
        for name in labelled.stdout.split():
            self.docker("volume", "rm", "-f", name)


@pytest.fixture(scope="module", autouse=True)
def busybox(docker: Callable[..., Run], busybox_tar: Path) -> None:
    ok(docker("load", "-i", busybox_tar))


@pytest.fixture
def made(session_token: str, docker: Callable[..., Run]) -> Iterator[Made]:
    m = Made(session_token, docker)
    yield m
    m.cleanup()


def inspect(docker: Callable[..., Run], kind: str, name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(ok(docker("inspect", "--type", kind, name)))
    return data[0]


def run(docker: Callable[..., Run], made: Made, *args: str) -> Run:
    return docker("run", "--rm", "--name", made.container("run"), *args)


def new_api(daemon: Daemon) -> bool:
    """dockerd 23+ (API 1.42): anonymous-volume label, prune removes anonymous volumes only."""
    return not daemon.is_docker or tuple(map(int, daemon.api_version.split("."))) >= (1, 42)


# --- volume commands -----------------------------------------------------------------------------


def test_volume_create_inspect_ls_rm(docker, made):
    name = made.volume()
    assert ok(docker("volume", "create", "--label", "a=b", name)) == f"{name}\n"
    vol = inspect(docker, "volume", name)
    assert vol["Name"] == name and vol["Driver"] == "local" and vol["Scope"] == "local"
    assert vol["Labels"] == {"a": "b"} and vol["Options"] is None
    assert vol["Mountpoint"].endswith(f"/volumes/{name}/_data")
    assert vol["CreatedAt"].endswith("Z") or vol["CreatedAt"][-6] in "+-"
    # an existing name answers the existing volume
    assert ok(docker("volume", "create", "--label", "c=d", name)) == f"{name}\n"
    assert inspect(docker, "volume", name)["Labels"] == {"a": "b"}
    listed = ok(
        docker("volume", "ls", "--filter", f"name={made.prefix}", "--format", "{{.Driver}} {{.Name}}")
    )
    assert listed == f"local {name}\n"
    assert (
        ok(docker("volume", "ls", "-q", "--filter", "label=a=b", "--filter", f"name={name}")) == f"{name}\n"
    )
    assert ok(docker("volume", "rm", name)) == f"{name}\n"
    res = docker("volume", "inspect", name)
    assert res.rc == 1 and f"get {name}: no such volume" in res.stderr
    res = docker("volume", "rm", name)
    assert res.rc == 1 and res.stderr == f"Error response from daemon: get {name}: no such volume\n"
    assert docker("volume", "rm", "-f", name).rc == 0


def test_volume_create_refuses_bad_names_and_options(docker, made):
    res = docker("volume", "create", "x")
    assert res.rc == 1 and "create x: volume name is too short" in res.stderr
    name = made.volume()
    res = docker("volume", "create", "--opt", "foo=bar", name)
    assert res.rc == 1 and res.stderr == f'Error response from daemon: create {name}: invalid option: "foo"\n'
    res = docker("volume", "create", "--opt", "type=tmpfs", name)
    assert res.rc == 1 and 'missing required option: "device"' in res.stderr


def test_volume_rm_in_use_is_refused(docker, made):
    vol, ctr = made.volume(), made.container()
    ok(docker("create", "--name", ctr, "-v", f"{vol}:/data", "busybox", "true"))
    cid = inspect(docker, "container", ctr)["Id"]
    for args in (("volume", "rm", vol), ("volume", "rm", "-f", vol)):
        res = docker(*args)
        assert res.rc == 1
        assert res.stderr == f"Error response from daemon: remove {vol}: volume is in use - [{cid}]\n"
    assert ok(docker("ps", "-a", "--filter", f"volume={vol}", "--format", "{{.Names}}")) == f"{ctr}\n"
    assert ok(docker("ps", "-a", "--filter", "volume=/data", "--filter", f"name={ctr}", "-q")) != ""


# --- data across containers ----------------------------------------------------------------------


def test_named_volume_persists_across_containers(docker, made):
    vol = made.volume()
    ok(run(docker, made, "-v", f"{vol}:/data", "busybox", "sh", "-c", "echo kept > /data/f"))
    assert ok(run(docker, made, "-v", f"{vol}:/elsewhere", "busybox", "cat", "/elsewhere/f")) == "kept\n"


def test_copy_up_fills_an_empty_volume_from_the_image(docker, made):
    vol = made.volume()
    out = ok(run(docker, made, "-v", f"{vol}:/etc", "busybox", "cat", "/etc/passwd"))
    assert out.startswith("root:")
    # the volume kept the image's files: another container sees them at any path
    assert "passwd" in ok(run(docker, made, "-v", f"{vol}:/x", "busybox", "ls", "/x")).split()
    # nocopy: nothing from the image (the runtime only makes the hosts/resolv.conf mount points in it)
    empty = made.volume("nocopy")
    mount = f"type=volume,src={empty},dst=/etc,volume-nocopy"
    listed = ok(run(docker, made, "--mount", mount, "busybox", "ls", "-A", "/etc")).split()
    assert listed == ["hostname", "hosts", "resolv.conf"]


def test_copy_up_of_image_volumes(docker, made, images, rootfs_tar, daemon):
    ref = images.track(f"{images.repo()}:vol")
    ok(docker("import", "-c", 'VOLUME ["/etc"]', "-c", 'CMD ["sh"]', rootfs_tar, ref))
    ctr = made.container()
    ok(docker("create", "--name", ctr, ref, "true"))
    mounts = inspect(docker, "container", ctr)["Mounts"]
    assert len(mounts) == 1
    m = mounts[0]
    assert (m["Type"], m["Destination"], m["Driver"], m["Mode"], m["RW"]) == (
        "volume",
        "/etc",
        "local",
        "",
        True,
    )
    assert len(m["Name"]) == 64
    anon = inspect(docker, "volume", m["Name"])
    if new_api(daemon):
        assert anon["Labels"] == {"com.docker.volume.anonymous": ""}
    assert "passwd" in ok(run(docker, made, "-v", f"{m['Name']}:/x", "busybox", "ls", "/x")).split()
    # rm -v removes the anonymous volume
    ok(docker("rm", "-v", ctr))
    assert docker("volume", "inspect", anon["Name"]).rc == 1


def test_read_only_mounts_refuse_writes(docker, made, tmp_path):
    vol = made.volume()
    res = run(docker, made, "-v", f"{vol}:/data:ro", "busybox", "touch", "/data/x")
    assert res.rc == 1 and "Read-only file system" in res.stderr
    res = run(
        docker, made, "--mount", f"type=bind,src={tmp_path},dst=/b,readonly", "busybox", "touch", "/b/x"
    )
    assert res.rc == 1 and "Read-only file system" in res.stderr
    assert not (tmp_path / "x").exists()


def test_bind_mounts_both_directions(docker, made, tmp_path):
    (tmp_path / "from-host").write_text("hello")
    out = ok(
        run(
            docker,
            made,
            "-v",
            f"{tmp_path}:/h",
            "busybox",
            "sh",
            "-c",
            "cat /h/from-host; echo back > /h/from-ctr",
        )
    )
    assert out == "hello"
    assert (tmp_path / "from-ctr").read_text() == "back\n"
    # a missing -v host path is made as a directory; --mount refuses it
    missing = tmp_path / "made" / "by-daemon"
    ok(run(docker, made, "-v", f"{missing}:/m", "busybox", "true"))
    assert missing.is_dir()
    gone = tmp_path / "gone"
    res = run(docker, made, "--mount", f"type=bind,src={gone},dst=/g", "busybox", "true")
    assert res.rc == 125
    assert err(res).startswith(
        f'docker: Error response from daemon: invalid mount config for type "bind": '
        f"bind source path does not exist: {gone}"
    )


def test_tmpfs_sizes_are_honoured(docker, made):
    script = "df -k /a /b | tail -2 | awk '{print $2}'"
    sized = ("--tmpfs", "/a:size=1m", "--mount", "type=tmpfs,dst=/b,tmpfs-size=2097152")
    out = ok(run(docker, made, *sized, "busybox", "sh", "-c", script))
    assert out.split() == ["1024", "2048"]
    vol = made.volume()
    ok(docker("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=3m", vol))
    assert (
        ok(run(docker, made, "-v", f"{vol}:/t", "busybox", "sh", "-c", "df -k /t | tail -1")).split()[1]
        == "3072"
    )
    assert inspect(docker, "volume", vol)["Options"] == {"device": "tmpfs", "o": "size=3m", "type": "tmpfs"}


def test_volumes_from(docker, made):
    vol, src = made.volume(), made.container("src")
    ok(docker("run", "--name", src, "-v", f"{vol}:/shared", "-v", "/anon", "busybox", "sh", "-c",
              "echo s > /shared/f; echo a > /anon/f"))  # fmt: skip
    assert ok(run(docker, made, "--volumes-from", src, "busybox", "cat", "/shared/f", "/anon/f")) == "s\na\n"
    res = run(docker, made, "--volumes-from", f"{src}:ro", "busybox", "touch", "/shared/g")
    assert res.rc == 1 and "Read-only file system" in res.stderr
    res = run(docker, made, "--volumes-from", f"{src}:rshared", "busybox", "true")
    assert res.rc == 125 and "invalid mode: rshared" in res.stderr


def test_rm_v_removes_anonymous_volumes_only(docker, made):
    vol, ctr = made.volume(), made.container()
    mounts_args = ("-v", f"{vol}:/named", "-v", "/anon", "--mount", "type=volume,dst=/anon2")
    ok(docker("create", "--name", ctr, *mounts_args, "busybox", "true"))
    mounts = {m["Destination"]: m for m in inspect(docker, "container", ctr)["Mounts"]}
    assert (
        mounts["/named"]["Mode"] == "z" and mounts["/anon"]["Mode"] == "" and mounts["/anon2"]["Mode"] == "z"
    )
    anonymous = [mounts["/anon"]["Name"], mounts["/anon2"]["Name"]]
    ok(docker("rm", "-v", ctr))
    for name in anonymous:
        assert docker("volume", "inspect", name).rc == 1
    assert inspect(docker, "volume", vol)["Name"] == vol


def test_volume_prune_keeps_volumes_in_use(docker, made, daemon):
    used_ctr, free_ctr = made.container("used"), made.container("free")
    label = made.label
    for ctr in (used_ctr, free_ctr):
        ok(
            docker(
                "create",
                "--name",
                ctr,
                "--mount",
                f"type=volume,dst=/d,volume-label={label}",
                "busybox",
                "true",
            )
        )
    used = inspect(docker, "container", used_ctr)["Mounts"][0]["Name"]
    free = inspect(docker, "container", free_ctr)["Mounts"][0]["Name"]
    ok(docker("rm", free_ctr))  # its anonymous volume stays, unused
    out = ok(docker("volume", "prune", "-f", "--filter", f"label={label}"))
    assert free in out and used not in out
    assert docker("volume", "inspect", free).rc == 1
    assert inspect(docker, "volume", used)["Name"] == used
    if new_api(daemon):
        assert inspect(docker, "volume", used)["Labels"] == {label.split("=")[0]: label.split("=")[1],
                                                             "com.docker.volume.anonymous": ""}  # fmt: skip
        named = made.volume()
        ok(docker("volume", "create", "--label", label, named))
        assert named not in ok(docker("volume", "prune", "-f", "--filter", f"label={label}"))
        assert named in ok(docker("volume", "prune", "-af", "--filter", f"label={label}"))


def test_mounts_in_inspect(docker, made, tmp_path):
    vol, ctr = made.volume(), made.container()
    ok(docker("create", "--name", ctr, "-v", f"{vol}:/data:ro", "-v", f"{tmp_path}:/host", "--mount",
              "type=tmpfs,dst=/t", "busybox", "true"))  # fmt: skip
    mounts = {m["Destination"]: m for m in inspect(docker, "container", ctr)["Mounts"]}
    assert mounts["/data"] == {
        "Type": "volume", "Name": vol, "Source": inspect(docker, "volume", vol)["Mountpoint"],
        "Destination": "/data", "Driver": "local", "Mode": "ro", "RW": False, "Propagation": "",
    }  # fmt: skip
    assert mounts["/host"] == {
        "Type": "bind", "Source": str(tmp_path), "Destination": "/host", "Mode": "", "RW": True,
        "Propagation": "rprivate",
    }  # fmt: skip
    assert mounts["/t"] == {
        "Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True, "Propagation": "",
    }  # fmt: skip


def test_bad_mount_requests_use_dockerds_texts(docker, made, tmp_path):
    res = run(docker, made, "-v", f"{tmp_path}:/a", "-v", "/var:/a", "busybox", "true")
    assert res.rc == 125 and "Error response from daemon: Duplicate mount point: /a" in res.stderr
    # (-v x:/a would be a Windows path to the CLI: the source goes through --mount)
    res = run(docker, made, "--mount", "type=volume,src=x,dst=/a", "busybox", "true")
    assert res.rc == 125 and "create x: volume name is too short" in res.stderr
    res = run(docker, made, "--mount", "type=volume,dst=/a,readonly", "busybox", "true")
    assert res.rc == 125
    assert (
        'invalid mount config for type "volume": must not set ReadOnly mode when using anonymous volumes'
        in res.stderr
    )


def test_missing_host_path_of_a_bind_volume_fails_at_start(docker, made, tmp_path):
    vol = made.volume()
    missing = tmp_path / "nope"
    ok(docker("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={missing}", vol))
    res = run(docker, made, "-v", f"{vol}:/x", "busybox", "true")
    assert res.rc == 127  # the CLI's reading of "no such file or directory"
    assert "error while mounting volume" in res.stderr and "no such file or directory" in res.stderr
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "f").write_text("on the host")
    bound = made.volume("bound")
    ok(
        docker(
            "volume",
            "create",
            "--opt",
            "type=none",
            "--opt",
            "o=bind",
            "--opt",
            f"device={tmp_path / 'dev'}",
            bound,
        )
    )
    assert ok(run(docker, made, "-v", f"{bound}:/x", "busybox", "cat", "/x/f")) == "on the host"
    assert os.listdir(tmp_path / "dev") == ["f"]
