"""Scenario 5 (recreate/): change the compose file and `up -d` again.

compose v2.40 finds the changed service through the `com.docker.compose.config-hash` label, creates
the replacement under a temporary name `<old id12>_<project>-app-1` with the label
`com.docker.compose.replace`, stops and removes the old container, then renames the new one. The
named volume carries over and the unchanged service is left alone. Events, names and labels were
checked against dockerd 20.10.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from composekit import Project, ok

CONFIG_HASH = "com.docker.compose.config-hash"


def test_changed_service_is_recreated(project: Callable[..., Project]) -> None:
    p = project("recreate")
    ok(p("up", "-d"))
    app_name, other_name = f"{p.name}-app-1", f"{p.name}-other-1"
    old = p.inspect(app_name)
    other = p.inspect(other_name)
    assert "GEN=1" in old["Config"]["Env"]
    ok(p("exec", "-T", "app", "sh", "-c", "echo kept > /data/f"))
    # Unchanged file: compose matches both containers by their config-hash label and leaves them be.
    res = p("up", "-d")
    ok(res)
    assert f"Container {app_name}  Running" in res.stderr
    assert p.inspect(app_name)["Id"] == old["Id"]

    since = f"{time.time():.3f}"
    p.file.write_text(p.file.read_text().replace('GEN: "1"', 'GEN: "2"'))
    res = p("up", "-d")
    ok(res)
    assert f"Container {app_name}  Recreate" in res.stderr
    assert f"Container {app_name}  Recreated" in res.stderr
    assert f"Container {other_name}  Running" in res.stderr
    until = f"{time.time() + 1:.3f}"

    new = p.inspect(app_name)
    assert new["Id"] != old["Id"]
    assert new["Name"] == f"/{app_name}"
    assert new["State"]["Running"]
    assert "GEN=2" in new["Config"]["Env"]
    labels = new["Config"]["Labels"]
    assert labels["com.docker.compose.replace"] == "app-1"
    assert labels[CONFIG_HASH] != old["Config"]["Labels"][CONFIG_HASH]
    assert labels["com.docker.compose.container-number"] == "1"
    gone = p.docker("inspect", old["Id"])
    assert gone.rc == 1 and f"No such object: {old['Id']}" in gone.stderr
    assert p.inspect(other_name)["Id"] == other["Id"]
    assert sorted(p.container_ids()) == sorted([new["Id"], other["Id"]])
    assert p.container_ids(f"label={CONFIG_HASH}={labels[CONFIG_HASH]}") == [new["Id"]]
    # The volume came along: same data, same volume.
    assert ok(p("exec", "-T", "app", "sh", "-c", "cat /data/f; echo $GEN")).split() == ["kept", "2"]
    assert [m["Name"] for m in new["Mounts"]] == [f"{p.name}_data"]

    out = ok(
        p.docker(
            "events",
            "--since",
            since,
            "--until",
            until,
            "--filter",
            p.filter,
            "--filter",
            "type=container",
            "--format",
            "{{json .}}",
        )
    )
    events = [json.loads(line) for line in out.splitlines()]
    seen = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("name")) for e in events]
    tmp_name = f"{old['Id'][:12]}_{app_name}"
    order = [
        ("create", new["Id"], tmp_name),
        ("stop", old["Id"], app_name),
        ("destroy", old["Id"], app_name),
        ("rename", new["Id"], app_name),
        ("start", new["Id"], app_name),
    ]
    positions = [seen.index(step) for step in order]
    assert positions == sorted(positions), seen
    rename = events[positions[3]]
    assert rename["Actor"]["Attributes"]["oldName"] == f"/{tmp_name}"
    assert rename["Actor"]["Attributes"]["com.docker.compose.replace"] == "app-1"
    lifecycle = {"create", "kill", "die", "stop", "destroy", "rename", "start"}
    assert not [a for a, cid, _ in seen if cid == other["Id"] and a in lifecycle], seen


def test_force_recreate(project: Callable[..., Project]) -> None:
    p = project("recreate")
    ok(p("up", "-d", "other"))
    old = p.inspect(f"{p.name}-other-1")
    res = p("up", "-d", "--force-recreate", "other")
    ok(res)
    assert f"Container {p.name}-other-1  Recreated" in res.stderr
    new = p.inspect(f"{p.name}-other-1")
    assert new["Id"] != old["Id"]
    # Same config, same hash; the replaced container is gone.
    assert new["Config"]["Labels"][CONFIG_HASH] == old["Config"]["Labels"][CONFIG_HASH]
    assert p.container_ids() == [new["Id"]]
