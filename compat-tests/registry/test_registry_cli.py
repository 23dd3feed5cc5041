"""docker push / pull / login / run against Debian's docker-registry on loopback, with the CLI.

Expectations are dockerd's (checked against the reference dockerd 20.10 with the same registries):
the pull and push lines, RepoDigests, the automatic pull of ``docker run``, login messages.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import regkit  # registered by this directory's conftest

USERS = regkit.TEST_USERS

DIGEST_LINE = re.compile(r"^(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)$", re.M)


def ok(res: Any) -> str:
    assert res.rc == 0, f"rc={res.rc}\nstdout={res.stdout}\nstderr={res.stderr}"
    return str(res.stdout)


def inspect(docker: Any, ref: str) -> dict[str, Any]:
    data = json.loads(ok(docker("image", "inspect", ref)))
    result: dict[str, Any] = data[0]
    return result


def test_push_then_pull_by_tag_and_digest(docker, images, plain_registry):
    repo = f"{plain_registry.host}/{images.repo()}"
    built = images.load(tags=[f"{repo}:v1"])
    out = ok(docker("push", f"{repo}:v1"))
    assert out.splitlines()[0] == f"The push refers to repository [{repo}]"
    assert re.search(r"^[0-9a-f]{12}: Pushed$", out, re.M), out
    tag, digest, size = DIGEST_LINE.search(out).groups()  # type: ignore[union-attr]
    assert tag == "v1" and int(size) > 0
    assert inspect(docker, f"{repo}:v1")["RepoDigests"] == [f"{repo}@{digest}"]
    # Again: every layer is there already.
    assert re.search(r"^[0-9a-f]{12}: Layer already exists$", ok(docker("push", f"{repo}:v1")), re.M)

    ok(docker("rmi", "-f", built.id))
    out = ok(docker("pull", f"{repo}:v1"))
    lines = out.splitlines()
    assert lines[0] == f"v1: Pulling from {images.repo()}"
    # The busybox layer may be here through another image of the session.
    assert re.search(r"^[0-9a-f]{12}: (Pull complete|Already exists)$", out, re.M), out
    assert f"Digest: {digest}" in lines
    assert lines[-2:] == [f"Status: Downloaded newer image for {repo}:v1", f"{repo}:v1"]
    image = inspect(docker, f"{repo}:v1")
    assert image["Id"] == built.id and image["RepoDigests"] == [f"{repo}@{digest}"]

    out = ok(docker("pull", f"{repo}@{digest}"))
    assert out.splitlines()[-2:] == [f"Status: Image is up to date for {repo}@{digest}", f"{repo}@{digest}"]
    out = ok(docker("pull", f"{repo}:v1"))
    assert f"Status: Image is up to date for {repo}:v1" in out


def test_pull_errors_like_dockerd(docker, images, plain_registry, bearer_registry):
    repo = f"{plain_registry.host}/{images.repo()}"
    res = docker("pull", f"{repo}:nope")
    assert res.rc == 1
    assert res.stderr.strip().endswith(
        f"manifest for {repo}:nope not found: manifest unknown: manifest unknown"
    ), res.stderr
    private = f"{bearer_registry.host}/{images.repo()}"
    res = docker("pull", f"{private}:v1")
    assert res.rc == 1
    assert (
        f"pull access denied for {private}, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied"
    ) in res.stderr
    # Docker Hub is behind the test's dead proxy: a fast, clear failure, never a real request.
    res = docker("pull", "busybox:skiff-never-there")
    assert res.rc == 1 and "proxyconnect tcp" in res.stderr


def test_multi_arch_index_selection(docker, images, plain_registry, uploader):
    repo_path = images.repo("multi")
    repo = f"{plain_registry.host}/{repo_path}"
    native_arch = inspect_arch(docker)
    other = "arm64" if native_arch != "arm64" else "amd64"
    native = uploader.image(
        repo_path, "native", [regkit.layer_tar({"arch": native_arch.encode()})], arch=native_arch, oci=True
    )
    foreign = uploader.image(
        repo_path, "foreign", [regkit.layer_tar({"arch": other.encode()})], arch=other, oci=True
    )
    entries = [
        (foreign, {"os": "linux", "architecture": other}),
        (native, {"os": "linux", "architecture": native_arch}),
    ]
    index = uploader.index(repo_path, "latest", entries)
    images.track(f"{repo}:latest")
    images.track(native.image_id)
    images.track(foreign.image_id)
    out = ok(docker("pull", f"{repo}:latest"))
    assert f"Digest: {index}" in out
    image = inspect(docker, f"{repo}:latest")
    assert (image["Id"], image["Architecture"]) == (native.image_id, native_arch)
    assert image["RepoDigests"] == [f"{repo}@{index}"]
    ok(docker("pull", "--platform", f"linux/{other}", f"{repo}:latest"))
    image = inspect(docker, f"{repo}:latest")
    assert (image["Id"], image["Architecture"]) == (foreign.image_id, other)
    res = docker("pull", "--platform", "linux/s390x", f"{repo}:latest")
    assert res.rc == 1 and "no matching manifest for linux/s390x in the manifest list entries" in res.stderr


def inspect_arch(docker: Any) -> str:
    return ok(docker("version", "--format", "{{.Server.Arch}}")).strip()


def test_login_ok_and_bad_credentials(docker, basic_registry, bearer_registry):
    user, password = next(iter(USERS.items()))
    for registry in (basic_registry, bearer_registry):
        res = docker("login", registry.host, "-u", user, "--password-stdin", input=password.encode())
        assert res.rc == 0 and "Login Succeeded" in res.stdout, res
        docker("logout", registry.host)
    res = docker("login", basic_registry.host, "-u", user, "--password-stdin", input=b"wrong")
    assert res.rc == 1
    assert res.stderr.strip() == (
        "Error response from daemon: login attempt to "
        f"http://{basic_registry.host}/v2/ failed with status: 401 Unauthorized"
    )
    res = docker("login", bearer_registry.host, "-u", user, "--password-stdin", input=b"wrong")
    assert res.rc == 1
    assert res.stderr.strip() == (
        f'Error response from daemon: Get "http://{bearer_registry.host}/v2/": '
        "unauthorized: incorrect username or password"
    )


def test_push_and_pull_with_credentials(docker, images, basic_registry, bearer_registry):
    user, password = next(iter(USERS.items()))
    for registry in (basic_registry, bearer_registry):
        repo = f"{registry.host}/{images.repo('auth')}"
        built = images.load(tags=[f"{repo}:v1"])
        res = docker("push", f"{repo}:v1")
        assert res.rc == 1 and ("no basic auth credentials" in res.stderr or "denied" in res.stderr), res
        login = docker("login", registry.host, "-u", user, "--password-stdin", input=password.encode())
        assert login.rc == 0, login
        try:
            assert DIGEST_LINE.search(ok(docker("push", f"{repo}:v1")))
            ok(docker("rmi", "-f", built.id))
            assert ok(docker("pull", f"{repo}:v1")).splitlines()[-1] == f"{repo}:v1"
        finally:
            docker("logout", registry.host)


def test_run_pulls_a_missing_image(docker, images, plain_registry):
    repo = f"{plain_registry.host}/{images.repo('run')}"
    built = images.load(tags=[f"{repo}:v1"])
    ok(docker("push", f"{repo}:v1"))
    ok(docker("rmi", "-f", built.id))
    res = docker("run", "--rm", f"{repo}:v1", "echo", "pulled and ran")
    assert res.rc == 0, res
    assert res.stdout == "pulled and ran\n"
    assert f"Unable to find image '{repo}:v1' locally" in res.stderr
    assert f"Status: Downloaded newer image for {repo}:v1" in res.stderr


def test_registry_killed_mid_pull_leaves_no_image_and_retry_resumes(
    docker, images, api, own_registry, daemon
):
    relay = regkit.SlowRelay(own_registry.port, rate=1_500_000)
    try:
        path = images.repo("killed")
        up = regkit.Uploader(own_registry.host)
        small = regkit.layer_tar({"small.txt": b"small\n"})
        big = regkit.layer_tar({"big.bin": os.urandom(6 << 20)})
        pushed = up.image(path, "v1", [small, big])
        up.close()
        small_blob, big_blob = (regkit.sha(b) for b in pushed.layers)
        repo = f"{relay.host}/{path}"
        images.track(f"{repo}:v1")
        images.track(pushed.image_id)
        seen: list[dict[str, Any]] = []
        killed = False
        with api.stream("POST", f"/images/create?fromImage={repo}&tag=v1", timeout=60) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if not line:
                    continue
                msg = json.loads(line)
                seen.append(msg)
                if not killed and msg.get("status") == "Downloading" and msg["id"] == big_blob[7:19]:
                    own_registry.kill()
                    killed = True
                if str(msg.get("status", "")).startswith("Retrying in") or "error" in msg:
                    break  # the client goes away mid-pull, as Ctrl-C would
        assert killed, seen
        deadline = time.monotonic() + 20
        while docker("image", "inspect", f"{repo}:v1").rc == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert docker("image", "inspect", f"{repo}:v1").rc == 1
        assert docker("image", "inspect", pushed.image_id).rc == 1

        own_registry.start()  # same port, same storage
        out = ok(docker("pull", f"{repo}:v1"))
        assert f"Status: Downloaded newer image for {repo}:v1" in out
        assert inspect(docker, f"{repo}:v1")["Id"] == pushed.image_id
        gets = own_registry.requests()
        # skiff keeps verified blobs of a failed pull and resumes from them; dockerd fetches again.
        assert gets.count(f"GET /v2/{path}/blobs/{small_blob}") == (2 if daemon.is_docker else 1), gets
        # (The killed GET of the big layer was never logged: the access log is written at the end.)
        assert gets.count(f"GET /v2/{path}/blobs/{big_blob}") >= 1
    finally:
        relay.close()


def test_push_refusals_in_stream(docker, images, plain_registry):
    repo = f"{plain_registry.host}/{images.repo('none')}"
    res = docker("push", f"{repo}:v1")
    assert res.rc == 1
    assert res.stderr.strip().endswith(f"An image does not exist locally with the tag: {repo}"), res.stderr


def test_push_api_without_credentials_header(api, images, plain_registry):
    repo = f"{plain_registry.host}/{images.repo('api')}"
    images.load(tags=[f"{repo}:v1"])
    r = api.post(f"/images/{repo}/push", params={"tag": "v1"}, content=b"{}")
    assert r.status_code == 200
    last = json.loads(r.content.splitlines()[-1])
    assert last["aux"]["Tag"] == "v1" and last["aux"]["Digest"].startswith("sha256:")
