"""Raw HTTP checks of the system endpoints, API versioning and error bodies (podman apiv2 style).

One request, one assertion on status, headers and JSON; expectations verified on the reference
dockerd, branching where the daemon's API range legitimately differs (20.10 serves 1.12-1.41).
"""

from __future__ import annotations

import json

import pytest

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def vt(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def assert_error(res, status: int, message: str) -> None:
    assert res.status_code == status, res.text
    assert res.headers["Content-Type"] == JSON
    assert res.json() == {"message": message}


# --- /_ping ---------------------------------------------------------------------------------------


def test_ping_get(api, daemon):
    res = api.get("/_ping")
    assert res.status_code == 200
    assert res.text == "OK"
    assert res.headers["Content-Type"] == TEXT
    assert res.headers["Api-Version"] == daemon.api_version
    assert res.headers["Ostype"] == "linux"
    assert res.headers["Docker-Experimental"] == "false"
    assert res.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert res.headers["Pragma"] == "no-cache"
    assert res.headers["Server"].endswith("(linux)")
    if not daemon.is_docker:
        assert res.headers["Swarm"] == "inactive"
        assert res.headers["Builder-Version"]


def test_ping_head(api, daemon):
    res = api.head("/_ping")
    assert res.status_code == 200
    assert res.content == b""
    assert res.headers["Content-Length"] == "0"
    assert res.headers["Content-Type"] == TEXT
    assert res.headers["Api-Version"] == daemon.api_version


@pytest.mark.parametrize("version", ["1.24", "1.41", "1.50"])
def test_versioned_paths(api, daemon, version):
    res = api.get(f"/v{version}/_ping")
    if vt(version) > vt(daemon.api_version):
        msg = f"client version {version} is too new. Maximum supported API version is {daemon.api_version}"
        assert_error(res, 400, msg)
        return
    assert res.status_code == 200 and res.text == "OK"
    res = api.get(f"/v{version}/version")
    assert res.status_code == 200
    assert res.json()["ApiVersion"] == daemon.api_version
    res = api.get(f"/v{version}/images/json", params={"filters": '{"label":["org.skiff.never.set"]}'})
    assert res.status_code == 200 and res.json() == []


def test_version_too_new(api, daemon):
    res = api.get("/v1.51/version")
    msg = f"client version 1.51 is too new. Maximum supported API version is {daemon.api_version}"
    assert_error(res, 400, msg)
    assert res.headers["Api-Version"] == daemon.api_version


@pytest.mark.parametrize("version", ["1.0", "1.23"])
def test_version_too_old(api, daemon, version):
    res = api.get(f"/v{version}/version")
    if vt(version) >= vt(daemon.min_api_version):
        assert res.status_code == 200
        return
    assert res.status_code == 400
    # dockerd answers in plain text for any version that predates JSON errors (<= 1.23).
    assert res.headers["Content-Type"] == TEXT
    assert res.text == (
        f"client version {version} is too old. Minimum supported API version is {daemon.min_api_version}, "
        "please upgrade your client to a newer version\n"
    )


# --- /version and /info ---------------------------------------------------------------------------


def test_version_body(api, daemon):
    res = api.get("/version")
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    body = res.json()
    for key in (
        "Version",
        "ApiVersion",
        "MinAPIVersion",
        "GitCommit",
        "GoVersion",
        "Os",
        "Arch",
        "KernelVersion",
    ):
        assert isinstance(body[key], str), key
    assert body["ApiVersion"] == daemon.api_version
    assert body["MinAPIVersion"] == daemon.min_api_version
    assert body["Os"] == "linux"
    assert body["Arch"] in ("amd64", "arm64")
    assert isinstance(body["Platform"]["Name"], str)
    engine = body["Components"][0]
    assert engine["Name"] == "Engine"
    assert engine["Version"] == body["Version"]
    assert engine["Details"]["ApiVersion"] == daemon.api_version
    assert engine["Details"]["MinAPIVersion"] == daemon.min_api_version
    assert engine["Details"]["Os"] == "linux"


def test_info_body(api):
    res = api.get("/info")
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    info = res.json()
    for key in ("ID", "Name", "ServerVersion", "OperatingSystem", "KernelVersion", "Architecture", "Driver"):
        assert isinstance(info[key], str), key
    for key in (
        "NCPU",
        "MemTotal",
        "Containers",
        "ContainersRunning",
        "ContainersPaused",
        "ContainersStopped",
        "Images",
    ):
        assert isinstance(info[key], int), key
    assert info["OSType"] == "linux"
    assert info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["Swarm"]["ControlAvailable"] is False
    assert info["Swarm"]["NodeID"] == ""
    assert info["IndexServerAddress"] == "https://index.docker.io/v1/"
    assert isinstance(info["Runtimes"], dict) and info["DefaultRuntime"] in info["Runtimes"]
    assert isinstance(info["DockerRootDir"], str) and info["DockerRootDir"].startswith("/")
    assert "com.docker.desktop.address" not in (info.get("Labels") or [])
    assert (
        info["Containers"] == info["ContainersRunning"] + info["ContainersPaused"] + info["ContainersStopped"]
    )


def test_common_headers_on_json_endpoints(api, daemon):
    for path in ("/version", "/info", "/images/json"):
        res = api.get(path)
        assert res.status_code == 200, path
        assert res.headers["Api-Version"] == daemon.api_version, path
        assert res.headers["Ostype"] == "linux", path
        assert res.headers["Server"].endswith("(linux)"), path


# --- unknown routes and error bodies --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1.41/nope", "/containers/x/nope/deeper"])
def test_unknown_endpoint(api, path):
    assert_error(api.get(path), 404, "page not found")


def test_wrong_method_is_page_not_found(api):
    assert_error(api.post("/_ping"), 404, "page not found")
    assert_error(api.delete("/version"), 404, "page not found")


def test_missing_image_errors(api, daemon):
    expected = (
        "no such image: nope: No such image: nope:latest"
        if daemon.is_docker
        else "No such image: nope:latest"
    )
    assert_error(api.get("/images/nope/json"), 404, expected)
    assert_error(api.delete("/images/nope"), 404, "No such image: nope:latest")
    assert_error(api.get("/images/nope/history"), 404, "No such image: nope:latest")
    assert_error(
        api.post("/images/nope/tag", params={"repo": "x", "tag": "y"}), 404, "No such image: nope:latest"
    )


def test_image_names_with_registry_and_slashes(api, images):
    missing = api.get("/images/localhost:5000/a/b:tag/json")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == JSON
    assert "No such image: localhost:5000/a/b:tag" in missing.json()["message"]
    ref = f"localhost:5000/{images.repo()}/sub:v1"
    image = images.load(tags=[ref])
    res = api.get(f"/images/{ref}/json")
    assert res.status_code == 200
    assert res.json()["Id"] == image.id
    assert res.json()["RepoTags"] == [ref]
    assert api.get(f"/images/{ref}/history").status_code == 200
    assert api.delete(f"/images/{ref}").json()[0] == {"Untagged": ref}


def test_bad_filters(api, daemon):
    assert_error(
        api.get("/images/json", params={"filters": '{"foo":["x"]}'}),
        400,
        "Invalid filter 'foo'" if daemon.is_docker else "invalid filter 'foo'",
    )
    assert_error(
        api.post("/images/prune", params={"filters": '{"foo":["x"]}'}),
        400,
        "Invalid filter 'foo'" if daemon.is_docker else "invalid filter 'foo'",
    )
    res = api.get("/images/json", params={"filters": "{bad"})
    # dockerd 20.10 answered 500 for undecodable JSON; since 23.0 it is an invalid-parameter error.
    assert res.status_code == (500 if daemon.is_docker else 400)
    assert res.headers["Content-Type"] == JSON
    assert isinstance(res.json()["message"], str) and res.json()["message"]


def test_filters_both_shapes(api, images):
    image = images.load(labels={"com.example.role": "web"})
    case = f"org.skiff.test.case={images.case}"
    for filters in (
        {"label": [case, "com.example.role=web"]},
        {"label": {case: True, "com.example.role=web": True}},
    ):
        res = api.get("/images/json", params={"filters": json.dumps(filters)})
        assert res.status_code == 200
        assert [row["Id"] for row in res.json()] == [image.id], filters


# --- image endpoints: shapes that depend on the API version ---------------------------------------


def test_image_list_dangling_placeholders_by_version(api, daemon, images):
    tag = f"{images.repo()}:latest"
    old = images.load(tags=[tag])
    images.load(tags=[tag])
    params = {"filters": json.dumps({"label": [f"org.skiff.test.case={images.case}"], "dangling": ["true"]})}
    res = api.get("/v1.41/images/json", params=params)
    assert res.status_code == 200
    (row,) = res.json()
    assert row["Id"] == old.id
    assert row["RepoTags"] == ["<none>:<none>"]
    assert row["RepoDigests"] == ["<none>@<none>"]
    assert row["VirtualSize"] == row["Size"]
    if vt(daemon.api_version) >= (1, 44):
        (row,) = api.get(f"/v{daemon.api_version}/images/json", params=params).json()
        assert row["RepoTags"] == [] and row["RepoDigests"] == []
        assert "VirtualSize" not in row


def test_image_delete_and_tag_bodies(api, images):
    image = images.load(tags=[f"{images.repo()}:a"])
    res = api.post(f"/images/{image.id}/tag", params={"repo": images.repo(), "tag": "b"})
    assert res.status_code == 201
    assert res.content == b""
    res = api.delete(f"/images/{images.repo()}:a")
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    assert res.json() == [{"Untagged": f"{images.repo()}:a"}]
    res = api.delete(f"/images/{images.repo()}:b")
    assert res.json()[:2] == [{"Untagged": f"{images.repo()}:b"}, {"Deleted": image.id}]


def test_image_load_stream(api, images):
    image = images.build()
    res = api.post("/images/load", params={"quiet": "1"}, content=image.path.read_bytes())
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    messages = [json.loads(line) for line in res.text.splitlines() if line.strip()]
    assert messages == [{"stream": f"Loaded image: {image.tags[0]}\n"}]


def test_image_load_garbage_reports_error_in_stream(api):
    res = api.post("/images/load", params={"quiet": "1"}, content=b"definitely not a tar archive" * 40)
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    last = json.loads(res.text.splitlines()[-1])
    assert last["error"] and last["errorDetail"] == {"message": last["error"]}


def test_image_import_stream(api, images, rootfs_tar):
    res = api.post(
        "/images/create",
        params={
            "fromSrc": "-",
            "repo": images.repo(),
            "tag": "imp",
            "changes": f"LABEL org.skiff.test.case={images.case}",
        },
        content=rootfs_tar.read_bytes(),
    )
    assert res.status_code == 200
    assert res.headers["Content-Type"] == JSON
    last = json.loads(res.text.splitlines()[-1])
    images.track(last["status"])
    assert last["status"].startswith("sha256:") and len(last["status"]) == 71
    inspect = api.get(f"/images/{images.repo()}:imp/json").json()
    assert inspect["Id"] == last["status"]
