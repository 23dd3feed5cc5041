"""docker-py's container life cycle: containers.run/create, attach_socket, logs(stream=True), wait,
kill, restart, remove, and the exceptions it raises.

The expectations are docker-py's own (return types, exception classes) checked against the
reference dockerd. Each test removes the containers it made, also when it fails.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.utils.socket import consume_socket_output, demux_adaptor, frames_iter


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


def test_run_returns_output(dockerpy, names):
    assert dockerpy.containers.run("busybox", "echo hi", name=names(), remove=True) == b"hi\n"


def test_run_without_remove_keeps_the_container(dockerpy, names):
    name = names()
    out = dockerpy.containers.run("busybox", ["sh", "-c", "echo a; echo b >&2"], name=name, stderr=True)
    assert out in (b"a\nb\n", b"b\na\n")
    c = dockerpy.containers.get(name)
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 0


def test_run_non_zero_raises_container_error(dockerpy, names):
    with pytest.raises(docker.errors.ContainerError) as err:
        dockerpy.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 2"], name=names(), remove=True)
    assert err.value.exit_status == 2
    assert err.value.stderr == b"bad\n"


def test_run_unknown_image_is_image_not_found(dockerpy, names):
    with pytest.raises(docker.errors.ImageNotFound):
        dockerpy.api.create_container("skiff-no-such-image:none", "true", name=names())


def test_run_detached_logs_stream_and_stop(dockerpy, names):
    c = dockerpy.containers.run(
        "busybox",
        ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done; sleep 300"],
        name=names(),
        detach=True,
    )
    stream = c.logs(stream=True, follow=True)
    seen = b""
    for chunk in stream:
        seen += chunk
        if seen == b"1\n2\n3\n":
            break
    stream.close()
    assert seen == b"1\n2\n3\n"
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    assert c.logs() == b"1\n2\n3\n"


def test_logs_follow_ends_with_the_container(dockerpy, names):
    c = dockerpy.containers.run(
        "busybox", ["sh", "-c", "echo x; sleep 0.5; echo y"], name=names(), detach=True
    )
    assert b"".join(c.logs(stream=True, follow=True)) == b"x\ny\n"


def test_wait_returns_status_and_error(dockerpy, names):
    c = dockerpy.containers.run("busybox", ["sh", "-c", "sleep 0.3; exit 4"], name=names(), detach=True)
    assert c.wait(timeout=30) == {"Error": None, "StatusCode": 4}


def test_kill_and_remove(dockerpy, names):
    c = dockerpy.containers.run("busybox", "sleep 300", name=names(), detach=True)
    c.kill()
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    with pytest.raises(docker.errors.APIError) as err:
        c.kill()
    assert err.value.status_code == 409
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        dockerpy.containers.get(c.id)


def test_remove_running_needs_force(dockerpy, names):
    c = dockerpy.containers.run("busybox", "sleep 300", name=names(), detach=True)
    with pytest.raises(docker.errors.APIError) as err:
        c.remove()
    assert err.value.status_code == 409
    c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        c.reload()


def test_restart(dockerpy, names):
    c = dockerpy.containers.run("busybox", "sleep 300", name=names(), detach=True)
    pid = c.attrs["State"]["Pid"]
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running" and c.attrs["State"]["Pid"] != pid


def test_attach_socket_before_start_demultiplexes(dockerpy, names):
    api = dockerpy.api
    cid = api.create_container(
        "busybox",
        ["sh", "-c", "cat; echo to-err >&2"],
        name=names(),
        stdin_open=True,  # docker-py also sets StdinOnce when not detached
    )["Id"]
    sock: Any = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw: socket.socket = getattr(sock, "_sock", sock)
    api.start(cid)
    raw.sendall(b"hello\n")
    raw.shutdown(socket.SHUT_WR)
    frames = (demux_adaptor(*frame) for frame in frames_iter(sock, tty=False))
    out, err = consume_socket_output(frames, demux=True)
    sock.close()
    assert (out, err) == (b"hello\n", b"to-err\n")
    assert api.wait(cid, timeout=30)["StatusCode"] == 0


def test_attach_streams_logs_then_output(dockerpy, daemon, names):
    c = dockerpy.containers.run(
        "busybox", ["sh", "-c", "echo early; sleep 1; echo late"], name=names(), detach=True
    )
    time.sleep(0.5)
    out = b"".join(c.attach(stdout=True, stderr=True, stream=True, logs=True))
    if daemon.is_docker and out == b"late\n":
        # dockerd writes the replay right behind the 101 head and docker-py loses bytes that
        # share a recv() with it (hijack.md pitfall 7); skiff waits until the head is read.
        return
    assert out == b"early\nlate\n"


def test_exit_code_127_for_missing_command(dockerpy, names):
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.containers.run("busybox", "nope", name=names())
    assert err.value.status_code == 400
    assert "executable file not found" in str(err.value.explanation)
