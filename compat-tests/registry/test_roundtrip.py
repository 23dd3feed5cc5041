"""commit → push → rmi → pull → run, end to end against Debian's docker-registry on loopback,
with the CLI and with docker-py; also pull by the pushed digest and ``RepoDigests`` after push.

Expectations are dockerd's (the same flow passes on the reference dockerd 20.10).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import docker as docker_sdk
import pytest

DIGEST_LINE = re.compile(r"^(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)$", re.M)


def ok(res: Any) -> str:
    assert res.rc == 0, f"rc={res.rc}\nstdout={res.stdout}\nstderr={res.stderr}"
    return str(res.stdout)


def inspect(docker: Any, ref: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(ok(docker("image", "inspect", ref)))[0]
    return result


@pytest.fixture
def base_image(images: Any) -> str:
    """A busybox variant of this test (so the roundtrip never depends on a shared busybox:latest)."""
    ref = f"{images.repo('base')}:latest"
    images.load(tags=[ref])
    return ref


def test_cli_commit_push_rmi_pull_run(docker, images, plain_registry, base_image):
    name = f"{images.repo('c')}"
    ok(docker("run", "-d", "--name", name, base_image, "sh", "-c", "echo hi > /x; sleep 60"))
    try:
        # The file is written right after start: wait for it rather than for a fixed time.
        for _ in range(100):
            if docker("exec", name, "cat", "/x").stdout == "hi\n":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the container never wrote /x")
        committed = images.track(
            ok(docker("commit", "-c", 'CMD ["cat","/x"]', name, f"{images.repo('rt')}:1")).strip()
        )
    finally:
        docker("rm", "-f", name)
    assert committed.startswith("sha256:")
    assert inspect(docker, committed)["Config"]["Cmd"] == ["cat", "/x"]

    repo = f"{plain_registry.host}/{images.repo('rt')}"
    ok(docker("tag", f"{images.repo('rt')}:1", f"{repo}:1"))
    out = ok(docker("push", f"{repo}:1"))
    assert out.splitlines()[0] == f"The push refers to repository [{repo}]"
    tag, digest, _ = DIGEST_LINE.search(out).groups()  # type: ignore[union-attr]
    assert tag == "1"
    assert inspect(docker, f"{repo}:1")["RepoDigests"] == [f"{repo}@{digest}"]

    ok(docker("rmi", f"{images.repo('rt')}:1"))
    ok(docker("rmi", f"{repo}:1"))
    assert docker("image", "inspect", committed).rc == 1

    res = docker("run", "--rm", f"{repo}:1")
    assert res.rc == 0, res
    assert res.stdout == "hi\n"
    assert f"Unable to find image '{repo}:1' locally" in res.stderr
    assert f"Status: Downloaded newer image for {repo}:1" in res.stderr
    image = inspect(docker, f"{repo}:1")
    assert image["Id"] == committed and image["RepoDigests"] == [f"{repo}@{digest}"]

    # By digest, from nothing: the same image, and the digest reference runs too.
    ok(docker("rmi", f"{repo}:1"))
    out = ok(docker("pull", f"{repo}@{digest}"))
    assert out.splitlines()[-2:] == [
        f"Status: Downloaded newer image for {repo}@{digest}",
        f"{repo}@{digest}",
    ]
    image = inspect(docker, f"{repo}@{digest}")
    assert image["Id"] == committed and image["RepoTags"] == []
    assert image["RepoDigests"] == [f"{repo}@{digest}"]
    res = docker("run", "--rm", f"{repo}@{digest}")
    assert (res.rc, res.stdout) == (0, "hi\n"), res


def test_dockerpy_commit_push_remove_pull_run(dockerpy, images, plain_registry, base_image):
    repo = f"{plain_registry.host}/{images.repo('pyrt')}"
    container = dockerpy.containers.run(base_image, ["sh", "-c", "echo hi > /x; sleep 60"], detach=True)
    try:
        for _ in range(100):
            if container.exec_run(["cat", "/x"]).output == b"hi\n":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the container never wrote /x")
        committed = container.commit(repository=repo, tag="1", changes=['CMD ["cat","/x"]'])
    finally:
        container.remove(force=True)
    images.track(committed.id)
    assert committed.attrs["Config"]["Cmd"] == ["cat", "/x"]

    lines = list(dockerpy.api.push(repo, tag="1", stream=True, decode=True))
    assert not [line for line in lines if "error" in line], lines
    digest = lines[-1]["aux"]["Digest"]
    assert dockerpy.images.get(f"{repo}:1").attrs["RepoDigests"] == [f"{repo}@{digest}"]

    dockerpy.images.remove(f"{repo}:1")
    with pytest.raises(docker_sdk.errors.ImageNotFound):
        dockerpy.images.get(committed.id)
    pulled = dockerpy.images.pull(repo, tag="1")
    assert pulled.id == committed.id
    assert dockerpy.containers.run(f"{repo}:1", remove=True) == b"hi\n"

    dockerpy.images.remove(f"{repo}:1")
    by_digest = dockerpy.images.pull(f"{repo}@{digest}")
    assert by_digest.id == committed.id
    assert by_digest.attrs["RepoDigests"] == [f"{repo}@{digest}"]
    assert dockerpy.containers.run(f"{repo}@{digest}", remove=True) == b"hi\n"
