"""Raw HTTP checks of ``POST /commit``: status, body and error texts (podman apiv2 style).

Verified on the reference dockerd; where dockerd 20.10 answers differently from dockerd 28 (which
skiff follows), the test branches on ``daemon.is_docker``. Every image made here is removed again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SESSION_LABEL

JSON = "application/json"


def assert_error(res, status: int, message: str) -> None:
    assert res.status_code == status, res.text
    assert res.headers["Content-Type"] == JSON
    assert res.json() == {"message": message}


@pytest.fixture(scope="module")
def container(api, busybox_tar: Path, session_token: str) -> Iterator[str]:
    res = api.post("/images/load", content=busybox_tar.read_bytes(), params={"quiet": "1"})
    assert res.status_code == 200, res.text
    body = {"Image": "busybox", "Cmd": ["true"], "Labels": {SESSION_LABEL: session_token}}
    res = api.post("/containers/create", json=body)
    assert res.status_code == 201, res.text
    cid = res.json()["Id"]
    yield cid
    api.delete(f"/containers/{cid}", params={"force": "1"})


@pytest.fixture
def committed(api) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for image_id in made:
        api.delete(f"/images/{image_id}", params={"force": "1"})


def commit(api, committed: list[str], cid: str, **kwargs):
    res = api.post("/commit", params={"container": cid, **kwargs.pop("params", {})}, **kwargs)
    if res.status_code == 201:
        committed.append(res.json()["Id"])
    return res


def test_commit_answers_201_with_the_id(api, container, committed):
    res = commit(api, committed, container)
    assert res.status_code == 201
    assert res.headers["Content-Type"] == JSON
    assert list(res.json()) == ["Id"] and res.json()["Id"].startswith("sha256:")


def test_missing_container_is_404(api, container, committed):
    assert_error(commit(api, committed, "skifftest-nope"), 404, "No such container: skifftest-nope")


def test_bad_change_is_400(api, container, committed):
    res = commit(api, committed, container, params={"changes": "FOO bar"})
    assert_error(res, 400, "foo is not a valid change command")


def test_every_changes_value_applies(api, container, committed):
    res = commit(api, committed, container, params={"changes": ["ENV A=1", "ENV B=2"]})
    assert res.status_code == 201, res.text
    config = api.get(f"/images/{res.json()['Id']}/json").json()["Config"]
    assert config["Env"][-2:] == ["A=1", "B=2"]


def test_a_body_replaces_the_config(api, container, committed):
    res = commit(api, committed, container, json={"Cmd": ["x"], "Env": ["B=2"]})
    assert res.status_code == 201, res.text
    config = api.get(f"/images/{res.json()['Id']}/json").json()["Config"]
    assert (config["Cmd"], config["Hostname"], config["Image"]) == (["x"], "", "")
    assert config["Env"] == ["B=2", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    # An empty object is no Config at all (docker-py always sends one): the container's is kept.
    res = commit(api, committed, container, json={})
    config = api.get(f"/images/{res.json()['Id']}/json").json()["Config"]
    assert (config["Cmd"], config["Image"]) == (["true"], "busybox")


def test_body_errors(api, container, committed, daemon):
    res = commit(api, committed, container, content=b"x=1", headers={"Content-Type": "text/plain"})
    if daemon.is_docker:  # dockerd 20.10's wording
        assert_error(res, 400, "Content-Type specified (text/plain) must be 'application/json'")
    else:
        assert_error(res, 400, "unsupported Content-Type header (text/plain): must be 'application/json'")
    res = commit(api, committed, container, content=b"[1]", headers={"Content-Type": JSON})
    kind = "runconfig.ContainerConfigWrapper" if daemon.is_docker else "container.CreateRequest"
    message = f"json: cannot unmarshal array into Go value of type {kind}"
    if daemon.is_docker:
        assert_error(res, 500, message)
    else:
        assert_error(res, 400, f"invalid JSON: {message}")
