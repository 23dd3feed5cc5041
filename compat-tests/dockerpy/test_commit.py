"""docker-py's Container.commit() and APIClient.commit(): the returned Image model, the Config a
``conf`` dict overrides (docker-py always sends a JSON body, ``{}`` when there is none), changes,
and the NotFound it raises. Checked against the reference dockerd too.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import SESSION_LABEL

_counter = itertools.count()


class Made:
    def __init__(self, token: str, client: docker.DockerClient) -> None:
        self.prefix = f"skpy-commit-{token}-{next(_counter)}"
        self.token = token
        self.client = client
        self.containers: list[str] = []
        self.images: list[str] = []

    def run(self, cmd: str) -> docker.models.containers.Container:
        name = f"{self.prefix}-{len(self.containers)}"
        self.containers.append(name)
        return self.client.containers.run(
            "busybox", cmd, name=name, detach=True, labels={SESSION_LABEL: self.token}
        )

    def cleanup(self) -> None:
        for name in self.containers:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True)
        for image in reversed(self.images):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.images.remove(image, force=True)


@pytest.fixture(scope="module", autouse=True)
def busybox(dockerpy: docker.DockerClient, busybox_tar: Path) -> None:
    dockerpy.images.load(busybox_tar.read_bytes())


@pytest.fixture
def made(session_token: str, dockerpy: docker.DockerClient) -> Iterator[Made]:
    m = Made(session_token, dockerpy)
    yield m
    m.cleanup()


def wait_for_file(container: docker.models.containers.Container, path: str) -> None:
    deadline = time.monotonic() + 20
    while container.exec_run(["test", "-f", path]).exit_code != 0:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_container_commit_returns_the_image(dockerpy, made):
    container = made.run("sh -c 'echo hi > /x; sleep 600'")
    wait_for_file(container, "/x")
    image = container.commit(
        repository=f"{made.prefix}-img", tag="v1", message="msg", author="me", changes=['CMD ["cat","/x"]']
    )
    made.images.append(image.id)
    assert isinstance(image, docker.models.images.Image)
    assert image.tags == [f"{made.prefix}-img:v1"]
    assert (image.attrs["Author"], image.attrs["Comment"]) == ("me", "msg")
    assert image.attrs["Config"]["Cmd"] == ["cat", "/x"]
    assert dockerpy.containers.run(image.id, remove=True) == b"hi\n"
    newest = image.history()[0]
    assert (newest["Id"], newest["CreatedBy"], newest["Comment"]) == (
        image.id,
        "sh -c echo hi > /x; sleep 600",
        "msg",
    )


def test_conf_overrides_the_config_and_is_merged(dockerpy, made):
    container = made.run("sleep 600")
    image = container.commit(conf={"Cmd": ["echo", "conf"], "Env": ["A=1"]})
    made.images.append(image.id)
    config = image.attrs["Config"]
    assert config["Cmd"] == ["echo", "conf"]
    assert config["Env"] == ["A=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    # A Config of its own: what merge does not fill is empty, as dockerd leaves it.
    assert (config["Hostname"], config["Image"]) == ("", "")
    assert image.tags == []
    assert dockerpy.containers.run(image.id, remove=True) == b"conf\n"
    # Without conf docker-py still sends "{}", which commits the container's own Config.
    plain = container.commit()
    made.images.append(plain.id)
    assert plain.attrs["Config"]["Cmd"] == ["sleep", "600"]
    assert plain.attrs["Config"]["Hostname"] == container.id[:12]


def test_commit_errors(dockerpy, made):
    with pytest.raises(docker.errors.NotFound) as nf:
        dockerpy.api.commit("skpy-commit-nope")
    assert nf.value.explanation == "No such container: skpy-commit-nope"
    container = made.run("sleep 600")
    with pytest.raises(docker.errors.APIError) as bad:
        container.commit(changes="FROM busybox")
    assert bad.value.status_code == 400
    assert bad.value.explanation == "from is not a valid change command"
