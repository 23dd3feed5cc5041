"""What a daemon outside a swarm and without managed plugins answers: the swarm family's 503s,
`docker swarm leave` through docker-py, the plugin routes' 404s and filter checks.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). skiff follows dockerd 28's
lower-case filter errors where dockerd 20.10 capitalizes them.
"""

from __future__ import annotations

import docker
import httpx
import pytest
from conftest import Daemon

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
    "this node to swarm and try again."
)
NOT_IN_SWARM = "This node is not part of a swarm"


def check(res: httpx.Response, status: int, message: str) -> None:
    assert (res.status_code, res.json()) == (status, {"message": message}), res.request.url


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/swarm"),
        ("GET", "/swarm/unlockkey"),
        ("POST", "/swarm/unlock"),
        ("GET", "/nodes"),
        ("GET", "/nodes/abc"),
        ("DELETE", "/nodes/abc"),
        ("GET", "/services"),
        ("GET", "/services/abc"),
        ("GET", "/services/abc/logs?stdout=1"),
        ("GET", "/tasks"),
        ("GET", "/tasks/abc"),
        ("GET", "/tasks/abc/logs?stderr=1"),
        ("GET", "/secrets"),
        ("GET", "/v1.41/configs"),
        ("DELETE", "/configs/x"),
    ],
)
def test_swarm_family_is_503(api: httpx.Client, method: str, path: str) -> None:
    body = {} if method == "POST" else None  # dockerd reads a POST's body before it asks the cluster
    check(api.request(method, path, json=body), 503, NOT_A_MANAGER)


def test_swarm_leave_and_logs_checks(api: httpx.Client, dockerpy: docker.DockerClient) -> None:
    check(api.post("/swarm/leave"), 503, NOT_IN_SWARM)
    check(api.post("/swarm/leave?force=1"), 503, NOT_IN_SWARM)
    # docker-py reads the forced leave's 503 as success, the plain one as an error.
    assert dockerpy.swarm.leave(force=True) is True
    with pytest.raises(docker.errors.APIError) as err:
        dockerpy.swarm.leave()
    assert err.value.response.status_code == 503 and NOT_IN_SWARM in str(err.value)
    # The log streams are checked before the cluster is asked.
    for path in ("/services/abc/logs", "/tasks/abc/logs"):
        check(api.get(path), 500, "Bad parameters: you must choose at least one stream")
    assert dockerpy.info()["Swarm"]["LocalNodeState"] == "inactive"


def test_plugins(api: httpx.Client, daemon: Daemon) -> None:
    res = api.get("/plugins")
    assert res.status_code == 200 and res.json() == []
    res = api.get("/plugins", params={"filters": '{"capability":["volumedriver"],"enabled":["true"]}'})
    assert res.status_code == 200 and res.json() == []
    invalid = "Invalid" if daemon.is_docker else "invalid"
    check(api.get("/plugins", params={"filters": '{"bogus":["x"]}'}), 400, f"{invalid} filter 'bogus'")
    check(
        api.get("/plugins", params={"filters": '{"enabled":["x"]}'}), 400, f"{invalid} filter 'enabled=[x]'"
    )
    check(api.get("/plugins/skiffnone/json"), 404, 'plugin "skiffnone" not found')
    check(api.get("/plugins/skiffnone:v1/json"), 404, 'plugin "skiffnone:v1" not found')
    check(api.post("/plugins/skiffnone/enable?timeout=0"), 404, 'plugin "skiffnone" not found')
    check(api.post("/plugins/skiffnone/enable"), 500, 'strconv.Atoi: parsing "": invalid syntax')
    for action in ("disable", "push", "set"):
        check(api.post(f"/plugins/skiffnone/{action}", json=[]), 404, 'plugin "skiffnone" not found')
    check(api.delete("/plugins/skiffnone?force=1"), 404, 'plugin "skiffnone" not found')
    check(
        api.post("/plugins/skiffnone/upgrade?remote=x", json=[]), 404, 'plugin "skiffnone:latest" not found'
    )
