"""docker-py's archive API: put_archive / get_archive (with the path stat it decodes from the
X-Docker-Container-Path-Stat header) on running and stopped containers, and the exceptions.

Checked against the reference dockerd too; where dockerd 20.10 answers differently from dockerd 28
(which skiff follows) the test branches on `daemon.is_docker`.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import Daemon

MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


def tar_bytes(**files: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar(stream: Iterator[bytes]) -> dict[str, bytes]:
    data = b"".join(stream)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for member in tf:
            reader = tf.extractfile(member) if member.isreg() else None
            out[member.name] = reader.read() if reader else member.linkname.encode()
    return out


def test_put_and_get_archive(dockerpy, names):
    ctr = dockerpy.containers.run("busybox", ["sleep", "600"], name=names(), detach=True)
    assert ctr.put_archive("/tmp", tar_bytes(**{"a.txt": b"alpha", "b.txt": b"beta"})) is True
    stream, stat = ctr.get_archive("/tmp/a.txt")
    assert untar(stream) == {"a.txt": b"alpha"}
    assert stat["name"] == "a.txt" and stat["size"] == 5 and stat["mode"] == 0o600
    assert stat["linkTarget"] == "" and stat["mtime"].endswith("Z")
    stream, stat = ctr.get_archive("/tmp")
    files = untar(stream)
    assert files["tmp/a.txt"] == b"alpha" and files["tmp/b.txt"] == b"beta"
    assert stat["name"] == "tmp" and stat["mode"] & MODE_DIR


def test_symlink_stat(dockerpy, names):
    ctr = dockerpy.containers.run("busybox", ["sleep", "600"], name=names(), detach=True)
    assert ctr.exec_run(["ln", "-s", "/etc/passwd", "/pw"]).exit_code == 0
    stream, stat = ctr.get_archive("/pw")
    assert stat["mode"] & MODE_SYMLINK and stat["linkTarget"] == "/etc/passwd"
    assert untar(stream) == {"pw": b"/etc/passwd"}
    stream, stat = ctr.get_archive("/bin/sh")
    assert stat["linkTarget"] == "/bin/busybox"


def test_stopped_container(dockerpy, names):
    ctr = dockerpy.containers.create("busybox", ["cat", "/tmp/in"], name=names())
    assert ctr.put_archive("/tmp", tar_bytes(**{"in": b"written while stopped\n"}))
    ctr.start()
    assert ctr.wait(timeout=30)["StatusCode"] == 0
    assert ctr.logs() == b"written while stopped\n"
    stream, _ = ctr.get_archive("/tmp/in")
    assert untar(stream) == {"in": b"written while stopped\n"}


def test_errors(dockerpy, names, daemon: Daemon):
    ctr = dockerpy.containers.run("busybox", ["sleep", "600"], name=names(), detach=True)
    with pytest.raises(docker.errors.NotFound) as info:
        ctr.get_archive("/no/such")
    assert info.value.explanation == f"Could not find the file /no/such in container {ctr.id}"
    with pytest.raises(docker.errors.NotFound) as info:
        ctr.put_archive("/no/such", tar_bytes(x=b"x"))
    assert info.value.explanation == f"Could not find the file /no/such in container {ctr.id}"
    with pytest.raises(docker.errors.APIError) as info:
        ctr.put_archive("/etc/passwd", tar_bytes(x=b"x"))
    assert info.value.explanation == "extraction point is not a directory"
    # dockerd 20.10 answered 500 here; dockerd >= 25 marks it InvalidParameter.
    assert info.value.status_code == (500 if daemon.is_docker else 400)
    with pytest.raises(docker.errors.NotFound) as info:
        dockerpy.api.get_archive("skpy-no-such-container", "/")
    assert info.value.explanation == "No such container: skpy-no-such-container"
