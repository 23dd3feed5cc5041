"""docker-py's pull(), push() and login() against docker-registry on loopback, with its own
expectations (return types, exception classes), checked against the reference dockerd."""

from __future__ import annotations

import json

import docker
import pytest
import regkit  # registered by this directory's conftest

USER, PASSWORD = next(iter(regkit.TEST_USERS.items()))


def test_push_and_pull(dockerpy, images, plain_registry):
    repo = f"{plain_registry.host}/{images.repo('py')}"
    built = images.load(tags=[f"{repo}:v1"])
    out = dockerpy.images.push(repo, tag="v1")
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert lines[0] == {"status": f"The push refers to repository [{repo}]"}
    aux = lines[-1]["aux"]
    assert aux["Tag"] == "v1" and aux["Size"] > 0
    streamed = list(dockerpy.api.push(repo, tag="v1", stream=True, decode=True))
    assert streamed[-1]["aux"]["Digest"] == aux["Digest"]

    dockerpy.images.remove(built.id, force=True)
    image = dockerpy.images.pull(repo, tag="v1")
    assert image.id == built.id
    assert image.attrs["RepoDigests"] == [f"{repo}@{aux['Digest']}"]
    assert dockerpy.images.pull(f"{repo}@{aux['Digest']}").id == built.id


def test_pull_missing_raises_not_found(dockerpy, images, plain_registry):
    with pytest.raises(docker.errors.NotFound) as info:
        dockerpy.images.pull(f"{plain_registry.host}/{images.repo('nope')}", tag="v1")
    assert "manifest unknown" in str(info.value)


def test_login_and_authenticated_pull(dockerpy, images, basic_registry):
    result = dockerpy.login(username=USER, password=PASSWORD, registry=basic_registry.host, reauth=True)
    assert result == {"IdentityToken": "", "Status": "Login Succeeded"}
    with pytest.raises(docker.errors.APIError) as info:
        dockerpy.login(username=USER, password="wrong", registry=basic_registry.host, reauth=True)
    assert "failed with status: 401 Unauthorized" in str(info.value)

    repo = f"{basic_registry.host}/{images.repo('pyauth')}"
    built = images.load(tags=[f"{repo}:v1"])
    auth = {"username": USER, "password": PASSWORD}
    out = dockerpy.images.push(repo, tag="v1", auth_config=auth)
    assert '"aux"' in out, out
    dockerpy.images.remove(built.id, force=True)
    assert dockerpy.images.pull(repo, tag="v1", auth_config=auth).id == built.id


def test_bearer_login_returns_identity_token(dockerpy, images, bearer_registry):
    result = dockerpy.login(username=USER, password=PASSWORD, registry=bearer_registry.host, reauth=True)
    assert result["Status"] == "Login Succeeded" and result["IdentityToken"]
    repo = f"{bearer_registry.host}/{images.repo('pytoken')}"
    built = images.load(tags=[f"{repo}:v1"])
    # The identity token alone (no password) authenticates, as a refresh_token grant.
    auth = {"identitytoken": result["IdentityToken"]}
    assert '"aux"' in dockerpy.images.push(repo, tag="v1", auth_config=auth)
    dockerpy.images.remove(built.id, force=True)
    assert dockerpy.images.pull(repo, tag="v1", auth_config=auth).id == built.id
