"""The ASGI app through httpx.ASGITransport with fake services: versioning, headers, error bodies,
system routes and the /events stream. Expectations were checked against a reference dockerd."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from api.app import create_app
from api.tests.fakes import unused
from api.versions import api_version
from engine import errdefs
from engine.config import DaemonConfig
from engine.events import EventBus
from engine.system import ContainerCounts, SystemService
from engine.wiring import Services

pytestmark = pytest.mark.anyio

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
SWARM_MESSAGE = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
    "this node to swarm and try again."
)


class FakeImages:
    def __init__(self, count: int = 0) -> None:
        self._count = count

    def count(self) -> int:
        return self._count


class Body(BaseModel):
    Name: str
    Size: int = 0


probe = APIRouter()


@probe.get("/probe/version")
async def probe_version(request: Request) -> dict[str, list[int]]:
    return {"version": list(api_version(request))}


@probe.get("/probe/raise/{kind}")
async def probe_raise(kind: str) -> None:
    errors: dict[str, Exception] = {
        "invalid": errdefs.InvalidParameter("bad <thing> & more"),
        "forbidden": errdefs.Forbidden("bridge is a pre-defined network and cannot be removed"),
        "notfound": errdefs.no_such_container("x"),
        "conflict": errdefs.Conflict("name in use"),
        "notmodified": errdefs.NotModified(),
        "internal": errdefs.Internal("disk on fire"),
        "notimpl": errdefs.NotImplemented_("not implemented"),
        "unavailable": errdefs.Unavailable("later"),
        "crash": RuntimeError("boom"),
        "silent": KeyError(),
        "group": ExceptionGroup("wrapped", [errdefs.Conflict("inner conflict")]),
    }
    raise errors[kind]


@probe.get("/probe/int")
async def probe_int(t: int) -> dict[str, int]:
    return {"t": t}


@probe.post("/probe/body")
async def probe_body(body: Body) -> dict[str, str]:
    return {"name": body.Name}


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def services(tmp_path, bus) -> Services:
    config = DaemonConfig(
        data_root=tmp_path / "data",
        exec_root=tmp_path / "exec",
        labels=("com.example.site=lab",),
        insecure_registries=("10.0.0.0/8", "myregistry:5000"),
        registry_mirrors=("https://mirror.example",),
        runtimes={"runc": "runc", "crun": "/usr/bin/crun"},
    )
    images = FakeImages(3)
    system = SystemService(
        config,
        images=images,
        events=bus,
        container_counts=lambda: ContainerCounts(running=1, paused=2, stopped=4),
    )
    return Services(
        config=config,
        events=bus,
        system=system,
        images=images,  # type: ignore[arg-type]
        containers=unused("containers"),
        execs=unused("execs"),
        volumes=unused("volumes"),
        networks=unused("networks"),
    )


@pytest.fixture
def app(services) -> FastAPI:
    app = create_app(services)
    app.include_router(probe)
    return app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docker") as c:
        yield c


def assert_server_headers(res: httpx.Response) -> None:
    assert res.headers["Api-Version"] == "1.50"
    assert res.headers["Ostype"] == "linux"
    assert res.headers["Docker-Experimental"] == "false"
    assert res.headers["Server"].startswith("skiff/") and res.headers["Server"].endswith(" (linux)")
    for name in ("api-version", "server", "ostype"):
        assert len(res.headers.get_list(name)) == 1, name


def assert_error(res: httpx.Response, status: int, message: str) -> None:
    assert res.status_code == status, res.text
    assert res.headers["Content-Type"] == JSON
    assert res.json() == {"message": message}
    assert "detail" not in res.text
    assert_server_headers(res)


# --- versioning and common headers ------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1.24", "/v1.41", "/v1.50"])
async def test_ping_versioned_and_not(client, prefix):
    res = await client.get(f"{prefix}/_ping")
    assert res.status_code == 200 and res.text == "OK"
    assert res.headers["Content-Type"] == TEXT
    assert_server_headers(res)
    assert res.headers["Builder-Version"] == "1"
    assert res.headers["Swarm"] == "inactive"
    assert res.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert res.headers["Pragma"] == "no-cache"


@pytest.mark.parametrize(("prefix", "expected"), [("", [1, 50]), ("/v1.41", [1, 41]), ("/v1.24", [1, 24])])
async def test_route_sees_requested_version(client, prefix, expected):
    res = await client.get(f"{prefix}/probe/version")
    assert res.json() == {"version": expected}


@pytest.mark.parametrize("version", ["1.51", "2.0", "1.100"])
async def test_too_new(client, version):
    res = await client.get(f"/v{version}/_ping")
    assert_error(res, 400, f"client version {version} is too new. Maximum supported API version is 1.50")


@pytest.mark.parametrize("version", ["1.23", "1.0", "0.9"])
async def test_too_old_is_plain_text(client, version):
    res = await client.get(f"/v{version}/version")
    assert res.status_code == 400
    assert res.headers["Content-Type"] == TEXT
    assert res.text == (
        f"client version {version} is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version\n"
    )
    assert_server_headers(res)


async def test_head_ping(client):
    res = await client.head("/_ping")
    assert res.status_code == 200
    assert res.content == b""
    assert res.headers["Content-Length"] == "0"
    assert res.headers["Content-Type"] == TEXT
    assert res.headers["Swarm"] == "inactive"
    assert_server_headers(res)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v1.41/nope"),
        ("GET", "/containers/x/nope/deeper"),
        ("POST", "/_ping"),
        ("DELETE", "/version"),
        ("HEAD", "/version"),  # dockerd has no HEAD on GET routes
        ("GET", "/v1.41"),
    ],
)
async def test_unknown_route_or_method_is_page_not_found(client, method, path):
    res = await client.request(method, path)
    assert res.status_code == 404
    assert_server_headers(res)
    if method != "HEAD":
        assert_error(res, 404, "page not found")


async def test_options_preflight(client):
    res = await client.options("/v1.41/containers/json")
    assert res.status_code == 200 and res.content == b""
    assert_server_headers(res)


async def test_access_log_one_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="skiff.api"):
        await client.get("/v1.41/_ping")
        await client.get("/nope")
    lines = [r.getMessage() for r in caplog.records if r.name == "skiff.api"]
    assert len(lines) == 2
    assert lines[0].startswith("GET /v1.41/_ping 200 ") and lines[0].endswith("ms")
    assert lines[1].startswith("GET /nope 404 ")


# --- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("invalid", 400, "bad <thing> & more"),
        ("forbidden", 403, "bridge is a pre-defined network and cannot be removed"),
        ("notfound", 404, "No such container: x"),
        ("conflict", 409, "name in use"),
        ("internal", 500, "disk on fire"),
        ("notimpl", 501, "not implemented"),
        ("unavailable", 503, "later"),
        ("crash", 500, "boom"),
        ("silent", 500, "KeyError"),
        ("group", 409, "inner conflict"),
    ],
)
async def test_errdefs_mapping(client, kind, status, message):
    assert_error(await client.get(f"/probe/raise/{kind}"), status, message)


async def test_error_body_is_dockerd_json(client):
    res = await client.get("/probe/raise/invalid")
    # Go's encoder with HTML escaping off, plus the newline json.Encoder adds.
    assert res.content == b'{"message":"bad <thing> & more"}\n'


async def test_not_modified_has_empty_body(client):
    res = await client.get("/probe/raise/notmodified")
    assert res.status_code == 304
    assert res.content == b""
    assert "content-type" not in res.headers
    assert_server_headers(res)


async def test_query_validation_is_400(client):
    res = await client.get("/probe/int", params={"t": "abc"})
    assert res.status_code == 400
    assert res.json()["message"].startswith('invalid query parameter "t": ')
    assert_server_headers(res)
    res = await client.get("/probe/int")
    assert res.status_code == 400 and '"t"' in res.json()["message"]


async def test_body_validation_is_400(client):
    res = await client.post("/probe/body", content=b"{not json", headers={"Content-Type": JSON})
    assert res.status_code == 400 and res.json()["message"].startswith("invalid JSON: ")
    res = await client.post("/probe/body", json={"Name": "x", "Size": "big"})
    assert res.status_code == 400 and res.json()["message"].startswith('invalid body field "Size": ')
    assert (await client.post("/probe/body", json={"Name": "x"})).json() == {"name": "x"}


async def test_json_body_without_content_type_is_accepted(client):
    # docker clients may omit Content-Type; dockerd decodes the body anyway.
    res = await client.post("/probe/body", content=b'{"Name":"bare"}')
    assert res.status_code == 200 and res.json() == {"name": "bare"}


# --- /version, /info, swarm, plugins --------------------------------------------------------------


async def test_version_shape(client):
    res = await client.get("/v1.41/version")
    assert res.status_code == 200 and res.headers["Content-Type"] == JSON
    body = res.json()
    assert list(body) == [
        "Platform",
        "Components",
        "Version",
        "ApiVersion",
        "MinAPIVersion",
        "GitCommit",
        "GoVersion",
        "Os",
        "Arch",
        "KernelVersion",
        "BuildTime",
    ]
    assert body["ApiVersion"] == "1.50" and body["MinAPIVersion"] == "1.24"
    assert body["Os"] == "linux" and body["Arch"] in ("amd64", "arm64")
    assert body["GoVersion"].startswith("python3.")
    engine = body["Components"][0]
    assert engine["Name"] == "Engine" and engine["Version"] == body["Version"]
    assert set(engine["Details"]) == {
        "ApiVersion",
        "Arch",
        "BuildTime",
        "Experimental",
        "GitCommit",
        "GoVersion",
        "KernelVersion",
        "MinAPIVersion",
        "Os",
    }
    assert engine["Details"]["ApiVersion"] == "1.50" and engine["Details"]["Experimental"] == "false"


# dockerd 28's system.Info keys (api/types/system/info.go), with omitempty fields that are empty
# here left out; the reference dockerd 20.10 additionally sends the since-removed KernelMemory,
# BridgeNfIptables/BridgeNfIp6tables and lacks CDISpecDirs/FirewallBackend.
INFO_KEYS = {
    "ID", "Containers", "ContainersRunning", "ContainersPaused", "ContainersStopped", "Images", "Driver",
    "DriverStatus", "Plugins", "MemoryLimit", "SwapLimit", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares",
    "CPUSet", "PidsLimit", "IPv4Forwarding", "Debug", "NFd", "OomKillDisable", "NGoroutines", "SystemTime",
    "LoggingDriver", "CgroupDriver", "CgroupVersion", "NEventsListener", "KernelVersion", "OperatingSystem",
    "OSVersion", "OSType", "Architecture", "IndexServerAddress", "RegistryConfig", "NCPU", "MemTotal",
    "GenericResources", "DockerRootDir", "HttpProxy", "HttpsProxy", "NoProxy", "Name", "Labels",
    "ExperimentalBuild", "ServerVersion", "Runtimes", "DefaultRuntime", "Swarm", "LiveRestoreEnabled",
    "Isolation", "InitBinary", "ContainerdCommit", "RuncCommit", "InitCommit", "SecurityOptions",
    "FirewallBackend", "CDISpecDirs", "Warnings",
}  # fmt: skip


async def test_info_shape_and_figures(client, services, bus):
    sub = bus.subscribe()
    res = await client.get("/info")
    assert res.status_code == 200 and res.headers["Content-Type"] == JSON
    info = res.json()
    assert set(info) - {"KernelMemoryTCP"} == INFO_KEYS
    assert (
        info["Containers"],
        info["ContainersRunning"],
        info["ContainersPaused"],
        info["ContainersStopped"],
    ) == (
        7,
        1,
        2,
        4,
    )
    assert info["Images"] == 3
    assert info["NEventsListener"] == 1
    sub.close()
    assert info["Driver"] == "overlay2" and info["DriverStatus"][0][0] == "Backing Filesystem"
    assert info["DockerRootDir"] == str(services.config.data_root)
    assert info["OSType"] == "linux" and info["CgroupDriver"] == "cgroupfs"
    assert info["CgroupVersion"] in ("1", "2")
    assert isinstance(info["NCPU"], int) and info["NCPU"] >= 1
    assert isinstance(info["MemTotal"], int) and info["MemTotal"] > 0
    assert info["Swarm"] == {
        "NodeID": "",
        "NodeAddr": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": False,
        "Error": "",
        "RemoteManagers": None,
    }
    assert info["Runtimes"] == {"crun": {"path": "/usr/bin/crun"}, "runc": {"path": "runc"}}
    assert info["DefaultRuntime"] == "runc" and info["InitBinary"] == "docker-init"
    assert info["LoggingDriver"] == "json-file"
    assert info["Labels"] == ["com.example.site=lab"]
    assert info["IndexServerAddress"] == "https://index.docker.io/v1/"
    assert info["Plugins"] == {
        "Volume": ["local"],
        "Network": ["bridge", "host", "null"],
        "Authorization": None,
        "Log": ["json-file"],
    }
    assert info["RegistryConfig"] == {
        "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8", "10.0.0.0/8"],
        "IndexConfigs": {
            "docker.io": {
                "Name": "docker.io",
                "Mirrors": ["https://mirror.example/"],
                "Secure": True,
                "Official": True,
            },
            "myregistry:5000": {"Name": "myregistry:5000", "Mirrors": [], "Secure": False, "Official": False},
        },
        "Mirrors": ["https://mirror.example/"],
    }
    assert info["Warnings"] is None or isinstance(info["Warnings"], list)  # nil slice when none
    assert info["SystemTime"].endswith("Z") or info["SystemTime"][-6] in "+-"


async def test_info_id_is_stable(app, services):
    first = services.system.engine_id
    again = SystemService(services.config, images=FakeImages())
    assert again.engine_id == first
    assert (services.config.data_root / "engine-id.json").exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/swarm"),
        ("POST", "/swarm/init"),
        ("GET", "/v1.41/nodes"),
        ("GET", "/nodes/abc"),
        ("GET", "/services"),
        ("POST", "/services/create"),
        ("GET", "/tasks"),
        ("GET", "/secrets"),
        ("DELETE", "/secrets/s1"),
        ("GET", "/configs"),
        ("POST", "/configs/c/update"),
    ],
)
async def test_swarm_family_is_503(client, method, path):
    assert_error(await client.request(method, path), 503, SWARM_MESSAGE)


async def test_plugins(client):
    res = await client.get("/plugins")
    assert res.status_code == 200 and res.json() == []
    assert_error(await client.get("/plugins/foo/json"), 404, 'plugin "foo" not found')


def test_openapi_document_still_builds(app):
    paths = app.openapi()["paths"]
    assert "/_ping" in paths and "/events" in paths and "/info" in paths


# --- /events --------------------------------------------------------------------------------------


def lines(res: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in res.text.splitlines() if line.strip()]


async def test_events_replay_since_until(client, bus):
    bus.publish("container", "create", "c" * 64, {"image": "busybox", "name": "web"})
    bus.publish("volume", "create", "vol1", {"driver": "local"})
    res = await client.get("/events", params={"since": "0", "until": str(time.time())})
    assert res.status_code == 200 and res.headers["Content-Type"] == JSON
    assert_server_headers(res)
    events = lines(res)
    assert [(e["Type"], e["Action"]) for e in events] == [("container", "create"), ("volume", "create")]
    assert events[0]["status"] == "create" and events[0]["id"] == "c" * 64 and events[0]["from"] == "busybox"
    assert events[0]["Actor"]["Attributes"] == {"image": "busybox", "name": "web"}
    assert events[0]["scope"] == "local" and events[0]["time"] == events[0]["timeNano"] // 10**9
    assert bus.listener_count == 0


async def test_events_until_in_the_future_streams_live_events(client, bus):
    async def publish_soon() -> None:
        await asyncio.sleep(0.1)
        bus.publish("network", "create", "n1", {"name": "net1", "type": "bridge"})

    task = asyncio.ensure_future(publish_soon())
    started = time.monotonic()
    res = await client.get("/events", params={"until": f"{time.time() + 0.5:.9f}"})
    await task
    assert time.monotonic() - started >= 0.4  # ended at the deadline, not before
    assert [(e["Type"], e["Action"]) for e in lines(res)] == [("network", "create")]
    assert bus.listener_count == 0


async def test_events_since_after_until(client):
    assert_error(
        await client.get("/events", params={"since": "10", "until": "5"}),
        400,
        "`since` time (10) cannot be after `until` time (5)",
    )
    # Without `since` there is nothing for `until` to precede (dockerd's zero time.Time).
    res = await client.get("/events", params={"until": "-5"})
    assert res.status_code == 200 and res.text == ""


async def test_events_bad_parameters(client):
    assert_error(
        await client.get("/events", params={"since": "abc"}),
        500,
        'strconv.ParseInt: parsing "abc": invalid syntax',
    )
    assert_error(
        await client.get("/events", params={"filters": '{"bogus":["x"]}'}), 400, "invalid filter 'bogus'"
    )
    res = await client.get("/events", params={"filters": "{bad"})
    assert res.status_code == 400 and res.json()["message"]


def publish_sample(bus: EventBus) -> None:
    cid, iid = "a" * 64, "sha256:" + "b" * 64
    bus.publish("container", "start", cid, {"image": "busybox:latest", "name": "web", "com.x.project": "p1"})
    bus.publish(
        "container", "exec_start: sh -c true", cid, {"image": "busybox:latest", "name": "web", "execID": "e1"}
    )
    bus.publish(
        "container",
        "health_status: healthy",
        "f" * 64,
        {"image": "nginx", "name": "db", "com.x.project": "p2"},
    )
    bus.publish("image", "tag", iid, {"name": "busybox:latest"})
    bus.publish("image", "create", iid, {"name": "busybox:latest"})
    bus.publish("network", "connect", "n" * 64, {"container": cid, "name": "bridge", "type": "bridge"})
    bus.publish("volume", "create", "data", {"driver": "local"})


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"type": ["container"]}, ["start", "exec_start: sh -c true", "health_status: healthy"]),
        ({"type": ["network", "volume"]}, ["connect", "create"]),
        ({"event": ["start"]}, ["start"]),
        ({"event": ["exec_start"]}, ["exec_start: sh -c true"]),
        ({"event": ["health_status"]}, ["health_status: healthy"]),
        ({"container": ["web"]}, ["start", "exec_start: sh -c true"]),
        ({"container": ["fff"]}, ["health_status: healthy"]),  # ID prefix
        ({"image": ["busybox"]}, ["start", "exec_start: sh -c true", "tag", "create"]),  # tag stripped
        ({"image": ["nginx"]}, ["health_status: healthy"]),
        ({"network": ["bridge"]}, ["connect"]),
        ({"volume": ["data"]}, ["create"]),
        ({"label": ["com.x.project=p1"]}, ["start"]),
        ({"label": ["com.x.project"]}, ["start", "health_status: healthy"]),
        ({"type": {"container": True}, "label": {"com.x.project=p2": True}}, ["health_status: healthy"]),
        ({"scope": ["local"], "type": ["volume"]}, ["create"]),
        ({"scope": ["swarm"]}, []),
        ({"daemon": ["x"]}, []),
    ],
)
async def test_events_filters(client, bus, filters, expected):
    publish_sample(bus)
    res = await client.get(
        "/events", params={"since": "0", "until": str(time.time()), "filters": json.dumps(filters)}
    )
    assert res.status_code == 200
    assert [e["Action"] for e in lines(res)] == expected


async def test_events_before_146_hide_image_create(client, bus):
    publish_sample(bus)
    params = {"since": "0", "until": str(time.time()), "filters": '{"type":["image"]}'}
    assert [e["Action"] for e in lines(await client.get("/v1.45/events", params=params))] == ["tag"]
    assert [e["Action"] for e in lines(await client.get("/v1.46/events", params=params))] == ["tag", "create"]


async def test_events_content_negotiation(client, bus):
    bus.publish("volume", "create", "v")
    params = {"since": "0", "until": str(time.time())}
    res = await client.get("/events", params=params, headers={"Accept": "application/x-ndjson"})
    assert res.headers["Content-Type"] == "application/x-ndjson" and len(lines(res)) == 1
    res = await client.get("/events", params=params, headers={"Accept": "application/json-seq"})
    assert res.headers["Content-Type"] == "application/json-seq" and res.content.startswith(b"\x1e{")


async def test_events_stream_ends_at_shutdown(client, bus):
    async def shut_down_soon() -> None:
        await asyncio.sleep(0.1)
        bus.publish("container", "die", "c1", {"name": "web", "image": "busybox"})
        await asyncio.sleep(0.05)
        bus.close()

    task = asyncio.ensure_future(shut_down_soon())
    res = await asyncio.wait_for(client.get("/events"), 5)
    await task
    assert [e["Action"] for e in lines(res)] == ["die"]


async def test_events_headers_before_first_event_and_disconnect(app, bus):
    """Raw ASGI: the head goes out before any event exists; a client disconnect ends the stream."""
    sent: list[dict] = []
    head_sent, disconnect = asyncio.Event(), asyncio.Event()

    request_read = False

    async def receive() -> dict:
        nonlocal request_read
        if not request_read:
            request_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            head_sent.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1.41/events",
        "raw_path": b"/v1.41/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"docker")],
        "client": None,
        "server": None,
    }
    call = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.wait_for(head_sent.wait(), 2)
    assert sent[0]["status"] == 200 and bus.listener_count == 1
    bus.publish("container", "start", "c1", {"name": "web"})
    for _ in range(100):
        if any(m.get("body") for m in sent):
            break
        await asyncio.sleep(0.01)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["Action"] == "start"
    disconnect.set()
    await asyncio.wait_for(call, 2)
    assert bus.listener_count == 0
