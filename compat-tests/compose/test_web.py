"""Scenario 1 (web/): busybox httpd plus a client on the project's default network.

The client resolves the web service by service name, by its network alias and by container name
(the embedded DNS server at 127.0.0.11 on user-defined networks), a sidecar in web's network
namespace (`network_mode: service:web`) reaches it on loopback, and the host fetches the page
through the port published on 127.0.0.1, which `down` releases. Checked against dockerd 20.10.

busybox's `wget -T` crashes (SIGSEGV, on dockerd too), so the client bounds its requests with
`timeout` instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
from composekit import Project, free_port, ok
from conftest import mkimage  # the root conftest, re-registered by this directory's


def fetch_from_client(p: Project, url: str) -> str:
    return ok(p("exec", "-T", "client", "timeout", "5", "wget", "-q", "-O", "-", url))


def test_names_aliases_and_published_port(project: Callable[..., Project]) -> None:
    port = free_port()
    p = project("web", WEB_PORT=str(port))
    ok(p("up", "-d"))
    web = p.inspect(f"{p.name}-web-1")
    endpoint = web["NetworkSettings"]["Networks"][f"{p.name}_default"]
    assert {"web", f"{p.name}-web-1", "www.internal"} <= set(endpoint["Aliases"])
    assert endpoint["IPAddress"]

    for url in (
        "http://web/",
        "http://www.internal/",
        f"http://{p.name}-web-1/",
        f"http://{endpoint['IPAddress']}/",
    ):
        assert fetch_from_client(p, url) == mkimage.INDEX_HTML, url
    lookup = ok(p("exec", "-T", "client", "nslookup", "-type=a", "www.internal"))
    assert endpoint["IPAddress"] in lookup.split("Name:", 1)[1]
    # The sidecar shares web's network namespace: web's httpd is on its loopback.
    sidecar = p.inspect(f"{p.name}-sidecar-1")
    assert sidecar["HostConfig"]["NetworkMode"] == f"container:{web['Id']}"
    page = ok(p("exec", "-T", "sidecar", "timeout", "5", "wget", "-q", "-O", "-", "http://127.0.0.1/"))
    assert page == mkimage.INDEX_HTML
    missing = p("exec", "-T", "client", "timeout", "3", "wget", "-q", "-O", "-", "http://no-such-service/")
    assert missing.rc != 0

    # From the host, through the published port (the server may need a moment after start).
    deadline = time.monotonic() + 10
    while True:
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/", timeout=5, trust_env=False)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert resp.status_code == 200
    assert resp.text == mkimage.INDEX_HTML
    assert ok(p("port", "web", "80")).strip() == f"127.0.0.1:{port}"
    assert web["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    row = json.loads(ok(p("ps", "--format", "json", "web")))
    assert row["Publishers"] == [
        {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": port, "Protocol": "tcp"}
    ]
    assert row["Ports"] == f"127.0.0.1:{port}->80/tcp"

    ok(p("down", "-t", "1"))
    # The port is released with the container.
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError(f"127.0.0.1:{port} still answers after down")
