"""`docker commit` with the docker CLI: the new image runs with the container's changes (added files,
deletions, a replaced directory), `-c/-m/-a` land in Config, Author, Comment and the history,
running containers are paused around the commit, and the error texts are dockerd's.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). A committed image also
goes through `docker save` into the reference dockerd (when one runs beside skiff) and must run
there; the test removes what it loaded. Containers carry the session label, which the committed
images inherit, so the session cleanup finds anything a failed test left.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DOCKER_CLI, SESSION_LABEL, Daemon, Images, Run, cli_env, ok

REFERENCE_SOCKET = Path("/run/ref-docker/docker.sock")
FS_SCRIPT = "echo hi > /x; rm /bin/ls; rm -rf /home; mkdir /home; echo h > /home/f; sleep 600"
_names = itertools.count()


class Containers:
    def __init__(self, docker: Callable[..., Run], token: str) -> None:
        self.docker = docker
        self.token = token
        self.made: list[str] = []

    def name(self) -> str:
        name = f"skifftest-commit-{self.token}-{next(_names)}"
        self.made.append(name)
        return name

    def run(self, *cmd: str, detach: bool = True) -> str:
        name = self.name()
        flags = ["-d"] if detach else []
        label = f"{SESSION_LABEL}={self.token}"
        ok(self.docker("run", *flags, "--name", name, "--label", label, "busybox", *cmd))
        return name

    def cleanup(self) -> None:
        for name in self.made:
            self.docker("rm", "-f", name)


@pytest.fixture(scope="module")
def busybox(docker: Callable[..., Run], busybox_tar: Path) -> str:
    ok(docker("load", "-i", busybox_tar))
    return ok(docker("image", "inspect", "-f", "{{.Id}}", "busybox")).strip()


@pytest.fixture
def ctrs(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Containers]:
    made = Containers(docker, session_token)
    yield made
    made.cleanup()


def wait_for_file(docker: Callable[..., Run], name: str, path: str) -> None:
    deadline = time.monotonic() + 20
    while docker("exec", name, "test", "-f", path).rc != 0:
        assert time.monotonic() < deadline, f"{path} never appeared in {name}"
        time.sleep(0.1)


def inspect(docker: Callable[..., Run], ref: str) -> dict[str, Any]:
    data = json.loads(ok(docker("image", "inspect", ref)))
    assert isinstance(data, list) and len(data) == 1
    result: dict[str, Any] = data[0]
    return result


def test_commit_with_changes_message_and_author(
    docker: Callable[..., Run], ctrs: Containers, images: Images, busybox: str
) -> None:
    name = ctrs.run("sh", "-c", FS_SCRIPT)
    wait_for_file(docker, name, "/home/f")
    ref = images.track(f"{images.repo('commit')}:v1")
    out = ok(docker("commit", "-c", 'CMD ["cat","/x"]', "-m", "msg", "-a", "me", name, ref))
    image_id = out.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71

    assert ok(docker("run", "--rm", ref)) == "hi\n"
    res = docker("run", "--rm", ref, "sh", "-c", "ls /bin/ls; ls /home; cat /home/f")
    assert res.stdout == "f\nh\n"
    assert "/bin/ls: No such file or directory" in res.stderr

    doc = inspect(docker, ref)
    assert doc["Id"] == image_id and doc["RepoTags"] == [ref]
    assert (doc["Author"], doc["Comment"], doc["Parent"]) == ("me", "msg", busybox)
    assert doc["Config"]["Cmd"] == ["cat", "/x"]
    assert doc["Config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert doc["Config"]["Image"] == "busybox"
    assert doc["Config"]["Hostname"] == ok(docker("inspect", "-f", "{{.Id}}", name))[:12]
    assert len(doc["RootFS"]["Layers"]) == 2

    fmt = "{{.ID}}|{{.CreatedBy}}|{{.Size}}|{{.Comment}}"
    rows = ok(docker("history", "--no-trunc", "--format", fmt, ref)).splitlines()
    assert rows[0] == f"{image_id}|sh -c {FS_SCRIPT}|5B|msg"
    assert rows[1].startswith(f"{busybox}|") and len(rows) == 3


def test_commit_of_an_unchanged_container_adds_no_layer(
    docker: Callable[..., Run], ctrs: Containers, images: Images, busybox: str
) -> None:
    name = ctrs.run("true", detach=False)
    ref = images.track(f"{images.repo('empty')}:latest")
    ok(docker("commit", name, images.repo("empty")))
    doc = inspect(docker, ref)
    assert doc["RootFS"]["Layers"] == inspect(docker, busybox)["RootFS"]["Layers"]
    assert doc["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"
    rows = ok(docker("history", "--format", "{{.CreatedBy}}|{{.Size}}", ref)).splitlines()
    assert rows[0] == "true|0B"


def test_commit_config_changes(
    docker: Callable[..., Run], ctrs: Containers, images: Images, busybox: str
) -> None:
    name = ctrs.run("sleep", "600")
    ref = images.track(f"{images.repo('changes')}:v1")
    changes = [
        "ENV A=1 B=two",
        "EXPOSE 8080/udp 80",
        "LABEL k=v",
        "USER nobody",
        "WORKDIR /srv",
        "VOLUME /data",
        'ENTRYPOINT ["/bin/echo"]',
    ]
    ok(docker("commit", *[arg for change in changes for arg in ("-c", change)], name, ref))
    config = inspect(docker, ref)["Config"]
    assert config["Env"][1:] == ["A=1", "B=two"]
    assert config["ExposedPorts"] == {"80/tcp": {}, "8080/udp": {}}
    assert config["Labels"] == {"k": "v", SESSION_LABEL: ctrs.token}
    assert (config["User"], config["WorkingDir"]) == ("nobody", "/srv")
    assert config["Volumes"] == {"/data": {}}
    # ENTRYPOINT without CMD in the same changes clears the container's Cmd.
    assert (config["Entrypoint"], config["Cmd"]) == (["/bin/echo"], None)


def test_running_container_is_paused_around_the_commit(
    docker: Callable[..., Run], ctrs: Containers, images: Images, busybox: str
) -> None:
    since = str(int(time.time()) - 1)
    name = ctrs.run("sleep", "600")
    ref = images.track(f"{images.repo('paused')}:v1")
    ok(docker("commit", name, ref))
    ok(docker("commit", "--pause=false", name))
    assert ok(docker("inspect", "-f", "{{.State.Status}}", name)).strip() == "running"
    until = str(int(time.time()) + 1)
    events = docker(
        "events", "--since", since, "--until", until, "--filter", f"container={name}",
        "--format", '{{.Action}}|{{index .Actor.Attributes "imageRef"}}',
    )  # fmt: skip
    actions = [line for line in ok(events).splitlines() if not line.startswith(("create", "start"))]
    assert actions == ["pause|", f"commit|{ref}", "unpause|", "commit|"]
    for image_id in ok(docker("images", "-q", "--filter", f"label={SESSION_LABEL}={ctrs.token}")).split():
        images.track(image_id)


def test_commit_errors(docker: Callable[..., Run], ctrs: Containers, daemon: Daemon) -> None:
    res = docker("commit", "skifftest-commit-nope")
    assert res.rc == 1
    assert res.stderr == "Error response from daemon: No such container: skifftest-commit-nope\n"
    name = ctrs.run("true", detach=False)
    res = docker("commit", "-c", "RUN true", name)
    assert res.rc == 1 and res.stderr == "Error response from daemon: run is not a valid change command\n"
    res = docker("commit", "-c", "ENV A", name)
    assert res.stderr == "Error response from daemon: ENV must have two arguments\n"


def test_saved_commit_runs_on_the_reference_dockerd(
    docker: Callable[..., Run],
    ctrs: Containers,
    images: Images,
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    if daemon.is_docker or not REFERENCE_SOCKET.is_socket():
        pytest.skip("needs skiff under test and the reference dockerd beside it")
    name = ctrs.run("sh", "-c", FS_SCRIPT)
    wait_for_file(docker, name, "/home/f")
    ref = images.track(f"{images.repo('portable')}:v1")
    ok(docker("commit", "-c", 'CMD ["cat","/x"]', name, ref))
    archive = tmp_path / "committed.tar"
    ok(docker("save", "-o", archive, ref))

    env = cli_env(f"unix://{REFERENCE_SOCKET}", tmp_path / "ref-config")
    assert DOCKER_CLI is not None

    def reference(*args: str) -> subprocess.CompletedProcess[str]:
        argv = ["timeout", "-s", "KILL", "60", DOCKER_CLI, *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)

    try:
        loaded = reference("load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr
        assert reference("run", "--rm", ref).stdout == "hi\n"
        res = reference("run", "--rm", ref, "sh", "-c", "ls /bin/ls; ls /home; cat /home/f")
        assert res.stdout == "f\nh\n" and "/bin/ls: No such file or directory" in res.stderr
    finally:
        reference("rmi", ref)
