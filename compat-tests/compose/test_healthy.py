"""Scenario 2 (healthy/): a named volume shared by two services, a healthcheck and
`depends_on: condition: service_healthy`.

compose starts `writer`, polls its inspect every 500 ms until `State.Health.Status` is exactly
"healthy" (it fails on "unhealthy"), then starts `reader`, which reads what `writer` wrote into the
shared volume. Checked against dockerd 20.10.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from composekit import Project, ok


def test_reader_waits_for_healthy_writer(project: Callable[..., Project]) -> None:
    p = project("healthy")
    res = p("up", "-d")
    ok(res)
    writer_name, reader_name = f"{p.name}-writer-1", f"{p.name}-reader-1"
    progress = res.stderr.splitlines()
    healthy = progress.index(f" Container {writer_name}  Healthy")
    assert progress.index(f" Container {reader_name}  Started") > healthy, res.stderr

    writer = p.inspect(writer_name)
    health = writer["State"]["Health"]
    assert health["Status"] == "healthy"
    assert health["FailingStreak"] == 0
    assert health["Log"] and health["Log"][-1]["ExitCode"] == 0
    assert writer["Config"]["Healthcheck"] == {
        "Test": ["CMD", "test", "-s", "/shared/token"],
        "Interval": 500_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 20,
    }
    reader = p.inspect(reader_name)
    assert reader["State"].get("Health") is None
    assert reader["Config"]["Labels"]["com.docker.compose.depends_on"] == "writer:service_healthy:false"
    assert writer["Config"]["Labels"]["com.docker.compose.depends_on"] == ""
    ps = {row["Service"]: row for row in map(json.loads, ok(p("ps", "--format", "json")).splitlines())}
    assert ps["writer"]["Health"] == "healthy"
    assert ps["writer"]["Status"].endswith("(healthy)")

    # One volume, mounted by both: what writer wrote, reader read (read-only on its side).
    volume = f"{p.name}_shared"
    for c in (writer, reader):
        assert [(m["Type"], m["Name"]) for m in c["Mounts"]] == [("volume", volume)]
    token = f"token-{writer['Config']['Hostname']}"
    assert ok(p("logs", "--no-log-prefix", "reader")).strip() == token
    denied = p("exec", "-T", "reader", "touch", "/shared/x")
    assert denied.rc != 0 and "Read-only file system" in denied.stderr
    assert ok(p("exec", "-T", "writer", "cat", "/shared/token")).strip() == token


def test_unhealthy_dependency_fails_up(project: Callable[..., Project]) -> None:
    p = project("healthy")
    res = p("--profile", "broken", "up", "-d", "needs-broken")
    assert res.rc == 1, res
    assert f"dependency failed to start: container {p.name}-broken-1 is unhealthy" in res.stderr
    broken = p.inspect(f"{p.name}-broken-1")
    health = broken["State"]["Health"]
    assert health["Status"] == "unhealthy"
    assert health["FailingStreak"] >= 2
    assert health["Log"][-1]["ExitCode"] == 1
    assert health["Log"][-1]["Output"] == "probe failed\n"
    # The dependent container was created but never started.
    needs = p.inspect(f"{p.name}-needs-broken-1")
    assert needs["State"]["Status"] == "created"


def test_completed_successfully_dependency(project: Callable[..., Project]) -> None:
    p = project("healthy")
    res = p("--profile", "seeded", "up", "-d", "after-seed")
    ok(res)
    seed_name, after_name = f"{p.name}-seed-1", f"{p.name}-after-seed-1"
    progress = res.stderr.splitlines()
    exited = progress.index(f" Container {seed_name}  Exited")
    assert progress.index(f" Container {after_name}  Started") > exited, res.stderr
    seed = p.inspect(seed_name)["State"]
    assert (seed["Status"], seed["ExitCode"]) == ("exited", 0)
    after = p.inspect(after_name)
    assert (
        after["Config"]["Labels"]["com.docker.compose.depends_on"]
        == "seed:service_completed_successfully:false"
    )
    assert ok(p("logs", "--no-log-prefix", "after-seed")).strip() == "seeded"


def test_up_wait(project: Callable[..., Project]) -> None:
    # `up --wait` polls inspect like depends_on: running, and healthy where there is a healthcheck.
    p = project("healthy")
    res = p("up", "-d", "--wait")
    ok(res)
    for name in (f"{p.name}-writer-1", f"{p.name}-reader-1"):
        assert f"Container {name}  Healthy" in res.stderr
    assert p.inspect(f"{p.name}-writer-1")["State"]["Health"]["Status"] == "healthy"
    res = p("--profile", "broken", "up", "-d", "--wait", "broken")
    assert res.rc == 1, res
    assert f"container {p.name}-broken-1 is unhealthy" in res.stderr
