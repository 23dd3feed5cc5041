"""Scenario 3 (scale/): `up -d --scale web=3`, the client reaching every replica.

Each replica writes its hostname (its short container ID) as its page. The service name resolves to
all three addresses, each replica name <project>-web-<n> to its own, and scaling back down removes
the extra replicas from DNS. Checked against dockerd 20.10.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from composekit import Project, ok


def a_records(p: Project, name: str) -> set[str]:
    out = ok(p("exec", "-T", "client", "nslookup", "-type=a", name))
    answer = out.split("Name:", 1)[1]
    return set(re.findall(r"Address:\s*(\d+\.\d+\.\d+\.\d+)", answer))


def test_client_reaches_every_replica(project: Callable[..., Project]) -> None:
    p = project("scale")
    ok(p("up", "-d", "--scale", "web=3"))
    ids = p.container_ids("label=com.docker.compose.service=web")
    assert len(ids) == 3
    replicas = {p.inspect(cid)["Name"].lstrip("/"): p.inspect(cid) for cid in ids}
    assert sorted(replicas) == [f"{p.name}-web-{n}" for n in (1, 2, 3)]
    network = f"{p.name}_default"
    addresses = {name: c["NetworkSettings"]["Networks"][network]["IPAddress"] for name, c in replicas.items()}
    assert len(set(addresses.values())) == 3

    served = ok(
        p(
            "exec",
            "-T",
            "client",
            "sh",
            "-c",
            f"for n in 1 2 3; do timeout 5 wget -q -O - http://{p.name}-web-$n/; done",
        )
    ).split()
    assert served == [replicas[f"{p.name}-web-{n}"]["Id"][:12] for n in (1, 2, 3)]
    assert a_records(p, "web") == set(addresses.values())
    for name, address in addresses.items():
        assert a_records(p, name) == {address}
    # The client loops over the service name's DNS answers: each answers, each a different replica.
    script = (
        "for a in $(nslookup -type=a web | sed -n '/^Name:/,$p' | awk '/^Address/ {print $2}'); do "
        "timeout 5 wget -q -O - http://$a/; done"
    )
    pages = ok(p("exec", "-T", "client", "sh", "-c", script))
    assert sorted(pages.split()) == sorted(c["Id"][:12] for c in replicas.values())

    ok(p("up", "-d", "--scale", "web=1"))
    left = p.container_ids("label=com.docker.compose.service=web")
    assert left == [replicas[f"{p.name}-web-1"]["Id"]]
    assert a_records(p, "web") == {addresses[f"{p.name}-web-1"]}
