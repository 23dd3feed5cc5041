"""docker-py's volume API (volumes.create/get/list/prune, Volume.remove) and container mounts
(``volumes=`` dicts and lists, ``docker.types.Mount``, ``volumes_from``, ``remove(v=True)``).

The expectations are docker-py's own (return types, exception classes), checked against the
reference dockerd. On a shared daemon nothing is pruned without this test's label filter. Each test
removes what it made, also when it fails.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.types import Mount

_counter = itertools.count()


class Made:
    def __init__(self, token: str, client: docker.DockerClient) -> None:
        self.prefix = f"skpyv-{token}-{next(_counter)}"
        self.label = {"org.skiff.test.volumes": self.prefix}
        self.client = client
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def container(self, suffix: str = "c") -> str:
        self.containers.append(f"{self.prefix}-{suffix}")
        return self.containers[-1]

    def volume(self, suffix: str = "v") -> str:
        self.volumes.append(f"{self.prefix}-{suffix}")
        return self.volumes[-1]

    def cleanup(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True, v=True)
        labelled = [
            v.name
            for v in self.client.volumes.list(filters={"label": f"org.skiff.test.volumes={self.prefix}"})
        ]
        for name in [*self.volumes, *labelled]:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_volume(name, force=True)


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


@pytest.fixture
def made(session_token: str, dockerpy: docker.DockerClient) -> Iterator[Made]:
    m = Made(session_token, dockerpy)
    yield m
    m.cleanup()


def test_volume_create_get_list_remove(dockerpy, made):
    name = made.volume()
    vol = dockerpy.volumes.create(name, labels={"k": "v"})
    assert isinstance(vol, docker.models.volumes.Volume)
    assert vol.name == name and vol.attrs["Driver"] == "local" and vol.attrs["Labels"] == {"k": "v"}
    assert dockerpy.volumes.get(name).attrs == vol.attrs
    assert [v.name for v in dockerpy.volumes.list(filters={"name": made.prefix})] == [name]
    vol.remove()
    with pytest.raises(docker.errors.NotFound) as info:
        dockerpy.volumes.get(name)
    assert f"get {name}: no such volume" in str(info.value)


def test_driver_opts_and_bad_names(dockerpy, made):
    name = made.volume()
    vol = dockerpy.volumes.create(
        name, driver="local", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=4m"}
    )
    assert vol.attrs["Options"] == {"device": "tmpfs", "o": "size=4m", "type": "tmpfs"}
    df = ["sh", "-c", "df -k /t | tail -1"]
    out = dockerpy.containers.run(
        "busybox", df, volumes={name: {"bind": "/t"}}, name=made.container(), remove=True
    )
    assert out.split()[1] == b"4096"
    with pytest.raises(docker.errors.APIError) as info:
        dockerpy.volumes.create("bad/name")
    assert info.value.status_code == 400 and "includes invalid characters for a local volume name" in str(
        info.value
    )


def test_volume_in_use_cannot_be_removed(dockerpy, made):
    name = made.volume()
    c = dockerpy.containers.create("busybox", "true", volumes=[f"{name}:/data"], name=made.container())
    with pytest.raises(docker.errors.APIError) as info:
        dockerpy.volumes.get(name).remove(force=True)
    assert info.value.status_code == 409
    assert info.value.explanation == f"remove {name}: volume is in use - [{c.id}]"
    c.remove()
    dockerpy.volumes.get(name).remove()


def test_data_persists_and_read_only_refuses_writes(dockerpy, made):
    name = made.volume()
    write = ["sh", "-c", "echo kept > /d/f"]
    rw = {name: {"bind": "/d", "mode": "rw"}}
    dockerpy.containers.run("busybox", write, volumes=rw, name=made.container("w"), remove=True)
    out = dockerpy.containers.run(
        "busybox",
        "cat /d/f",
        volumes={name: {"bind": "/d", "mode": "ro"}},
        name=made.container("r"),
        remove=True,
    )
    assert out == b"kept\n"
    with pytest.raises(docker.errors.ContainerError) as info:
        dockerpy.containers.run(
            "busybox", "touch /d/g", volumes=[f"{name}:/d:ro"], name=made.container("x"), remove=True
        )
    assert b"Read-only file system" in info.value.stderr


def test_mount_objects_binds_and_copy_up(dockerpy, made, tmp_path):
    (tmp_path / "in").write_text("from host")
    vol = made.volume()
    mounts = [
        Mount("/host", str(tmp_path), type="bind"),
        Mount("/etc", vol, type="volume"),
        Mount("/scratch", None, type="tmpfs", tmpfs_size=1 << 20),
    ]
    script = "cat /host/in; echo; echo out > /host/out; head -1 /etc/passwd; df -k /scratch | tail -1"
    out = dockerpy.containers.run(
        "busybox", ["sh", "-c", script], mounts=mounts, name=made.container(), remove=True
    )
    lines = out.decode().splitlines()
    assert lines[0] == "from host" and lines[1].startswith("root:") and lines[2].split()[1] == "1024"
    assert (tmp_path / "out").read_text() == "out\n"
    with pytest.raises(docker.errors.APIError) as info:
        missing = Mount("/x", str(tmp_path / "missing"), type="bind")
        dockerpy.containers.create("busybox", "true", mounts=[missing], name=made.container("bad"))
    assert info.value.status_code == 400
    assert "bind source path does not exist" in info.value.explanation


def test_volumes_from_and_remove_v(dockerpy, made):
    named = made.volume()
    src = dockerpy.containers.create(
        "busybox", "true", volumes=[f"{named}:/n", "/anon"], name=made.container("src")
    )
    anon = next(m["Name"] for m in src.attrs["Mounts"] if m["Destination"] == "/anon")
    user = dockerpy.containers.create(
        "busybox", "true", volumes_from=[f"{src.id}:ro"], name=made.container("user")
    )
    user.reload()
    assert {m["Destination"]: m["RW"] for m in user.attrs["Mounts"]} == {"/n": False, "/anon": False}
    user.remove(v=True)  # the anonymous volume is still used by `src`: kept, and no error
    assert dockerpy.volumes.get(anon).name == anon
    src.remove(v=True)
    with pytest.raises(docker.errors.NotFound):
        dockerpy.volumes.get(anon)
    assert dockerpy.volumes.get(named).name == named


def test_prune_keeps_volumes_in_use(dockerpy, made):
    label = f"org.skiff.test.volumes={made.prefix}"
    mount = Mount("/d", None, type="volume", labels=made.label)
    used = dockerpy.containers.create("busybox", "true", mounts=[mount], name=made.container("used"))
    free = dockerpy.containers.create("busybox", "true", mounts=[mount], name=made.container("free"))
    used_vol, free_vol = (c.attrs["Mounts"][0]["Name"] for c in (used, free))
    free.remove()
    report = dockerpy.volumes.prune(filters={"label": label})
    assert report["VolumesDeleted"] == [free_vol]
    assert isinstance(report["SpaceReclaimed"], int)
    assert dockerpy.volumes.get(used_vol).attrs["Labels"]["org.skiff.test.volumes"] == made.prefix
