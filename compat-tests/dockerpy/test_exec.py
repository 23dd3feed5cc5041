"""docker-py's exec API (Container.exec_run and the low-level exec_* calls) against the daemon.

Includes the hijack pitfalls docker-py is sensitive to (docs/hijack.md): output sharing a recv()
with the 101 head (30 back-to-back runs), and ExitCode being set the moment the stream ends.
Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from docker.utils.socket import frames_iter

_names = itertools.count()


@pytest.fixture(scope="module")
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> str:
    with open(busybox_tar, "rb") as f:
        dockerpy.images.load(f.read())
    return "busybox:latest"


@pytest.fixture(scope="module")
def make(dockerpy: docker.DockerClient, busybox: str, session_token: str) -> Iterator[Any]:
    made: list[Container] = []

    def run(command: str | list[str] = "sleep 600") -> Container:
        name = f"skifftest-dpexec-{session_token}-{next(_names)}"
        ctr: Container = dockerpy.containers.run(busybox, command, name=name, detach=True)
        made.append(ctr)
        return ctr

    yield run
    for ctr in made:
        with contextlib.suppress(docker.errors.NotFound):
            ctr.remove(force=True)


@pytest.fixture(scope="module")
def ctr(make: Any) -> Container:
    c: Container = make()
    return c


def test_exec_run_output_and_exit_code(ctr: Container) -> None:
    assert tuple(ctr.exec_run(["echo", "hi"])) == (0, b"hi\n")
    assert tuple(ctr.exec_run(["sh", "-c", "exit 5"])) == (5, b"")
    assert tuple(ctr.exec_run("sh -c 'echo out; echo err >&2'", demux=True)) == (0, (b"out\n", b"err\n"))


def test_thirty_back_to_back_exec_runs(ctr: Container) -> None:
    # docker-py drops stream bytes that arrive in the same recv() as the 101 head (pitfall 7).
    for i in range(30):
        assert tuple(ctr.exec_run(["echo", f"run-{i}"])) == (0, f"run-{i}\n".encode())


def test_exec_run_stream_demux(ctr: Container) -> None:
    result = ctr.exec_run(["sh", "-c", "echo a; sleep 0.1; echo b >&2; echo c"], stream=True, demux=True)
    assert result.exit_code is None
    parts = list(result.output)
    assert b"".join(o for o, _ in parts if o) == b"a\nc\n"
    assert b"".join(e for _, e in parts if e) == b"b\n"


def test_exec_run_user_workdir_environment(ctr: Container) -> None:
    result = ctr.exec_run(
        ["sh", "-c", "echo $GREETING; id -u; pwd"],
        user="app",
        workdir="/tmp",
        environment={"GREETING": "yo"},
    )
    assert tuple(result) == (0, b"yo\n1000\n/tmp\n")


def test_exec_start_socket_then_inspect_right_after_eof(
    dockerpy: docker.DockerClient, ctr: Container
) -> None:
    api = dockerpy.api
    exec_id = api.exec_create(ctr.id, ["sh", "-c", "echo sock; echo err >&2; exit 9"])["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw: socket.socket = sock._sock
    try:
        raw.shutdown(socket.SHUT_WR)  # no stdin: what the CLI does too
        frames = list(frames_iter(sock, tty=False))
    finally:
        sock.close()
    assert sorted(frames) == [(1, b"sock\n"), (2, b"err\n")]
    info = api.exec_inspect(exec_id)  # at once: the daemon records the exit before EOF
    assert (info["Running"], info["ExitCode"]) == (False, 9)


def test_exec_inspect_fields(dockerpy: docker.DockerClient, ctr: Container, daemon: Any) -> None:
    api = dockerpy.api
    exec_id = api.exec_create(ctr.id, ["true"], stdout=True, stderr=False, tty=True)["Id"]
    info = api.exec_inspect(exec_id)
    assert info["ID"] == exec_id and info["ContainerID"] == ctr.id
    assert (info["Running"], info["ExitCode"], info["Pid"], info["CanRemove"]) == (False, None, 0, False)
    assert info["ProcessConfig"] == {"tty": True, "entrypoint": "true", "arguments": [], "privileged": False}
    assert (info["OpenStdin"], info["OpenStdout"], info["OpenStderr"]) == (False, True, False)
    assert info["DetachKeys"] == ""
    assert exec_id in dockerpy.api.inspect_container(ctr.id)["ExecIDs"]
    if not daemon.is_docker:
        # Kept until the process exists (hijack.md 6); dockerd 20.10 waits 10 s, then answers 500.
        api.exec_resize(exec_id, height=20, width=70)
    api.exec_start(exec_id, detach=True)
    deadline = time.monotonic() + 10
    while api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api.exec_inspect(exec_id)["ExitCode"] == 0


def test_exec_stdin_through_the_socket(dockerpy: docker.DockerClient, ctr: Container) -> None:
    api = dockerpy.api
    exec_id = api.exec_create(ctr.id, ["cat"], stdin=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw: socket.socket = sock._sock
    try:
        raw.sendall(b"hello through stdin")
        raw.shutdown(socket.SHUT_WR)
        frames = list(frames_iter(sock, tty=False))
    finally:
        sock.close()
    assert b"".join(d for s, d in frames if s == 1) == b"hello through stdin"
    assert api.exec_inspect(exec_id)["ExitCode"] == 0


def test_exec_errors(dockerpy: docker.DockerClient, make: Any, daemon: Any) -> None:
    api = dockerpy.api
    with pytest.raises(docker.errors.NotFound, match="No such exec instance: missing"):
        api.exec_inspect("missing")
    with pytest.raises(docker.errors.NotFound, match="No such exec instance: missing"):
        api.exec_start("missing")
    stopped = make("true")
    stopped.wait()
    with pytest.raises(docker.errors.APIError) as exc:
        stopped.exec_run(["true"])
    assert exc.value.response.status_code == 409
    word = "Container" if daemon.is_docker else "container"
    assert exc.value.explanation == f"{word} {stopped.id} is not running"
