"""Health checks with the real CLI: `--health-*` flags and an image's HEALTHCHECK, State.Health
(status, failing streak, the last five results), `docker ps` status text and `health=` filter, the
`health_status` and probe exec events, probe timeouts, the monitor across pause/stop/restart and a
daemon restart, and what create keeps of a raw API healthcheck.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Intervals are short
(100 ms) to keep the module fast; dockerd's floor is 1 ms. One difference is branched on
`daemon.is_docker`: a probe killed at its timeout takes its children along under skiff, while
dockerd kills the probe's own process only and leaves what it forked running in the container.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from conftest import SESSION_LABEL, Daemon, Images, Run, ok

_names = itertools.count()
FAST = ("--health-interval", "100ms")
SECOND = 1_000_000_000


class Containers:
    def __init__(self, docker: Callable[..., Run], token: str) -> None:
        self.docker = docker
        self.token = token
        self.made: list[str] = []

    def name(self) -> str:
        name = f"skifftest-health-{self.token}-{next(_names)}"
        self.made.append(name)
        return name

    def run(self, *args: str, image: str = "busybox", cmd: tuple[str, ...] = ("sleep", "600")) -> str:
        name = self.name()
        ok(
            self.docker(
                "run", "-d", "--name", name, "--label", f"{SESSION_LABEL}={self.token}", *args, image, *cmd
            )
        )
        return name

    def cleanup(self) -> None:
        for name in self.made:
            self.docker("rm", "-f", name)


@pytest.fixture
def ctrs(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Containers]:
    made = Containers(docker, session_token)
    yield made
    made.cleanup()


def inspect(docker: Callable[..., Run], name: str) -> dict[str, Any]:
    data = json.loads(ok(docker("inspect", name)))
    result: dict[str, Any] = data[0]
    return result


def wait_health(docker: Callable[..., Run], name: str, status: str, timeout: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = inspect(docker, name)["State"].get("Health") or {}
        if health.get("Status") == status:
            return health
        assert time.monotonic() < deadline, f"{name} never became {status}: {health}"
        time.sleep(0.05)


def when(stamp: str) -> datetime:
    """An RFC 3339 time as dockerd prints it (nanoseconds; Python keeps microseconds)."""
    return datetime.fromisoformat(stamp)


def ps_status(docker: Callable[..., Run], name: str) -> str:
    return ok(docker("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Status}}")).strip()


def ps_health(docker: Callable[..., Run], name: str, health: str) -> list[str]:
    args = (
        "ps",
        "-a",
        "--filter",
        f"name=^{name}$",
        "--filter",
        f"health={health}",
        "--format",
        "{{.Names}}",
    )
    return ok(docker(*args)).split()


def events(docker: Callable[..., Run], name: str, since: float, *filters: str) -> list[str]:
    args = [
        "events",
        "--since",
        f"{since:.9f}",
        "--until",
        f"{time.time():.9f}",
        "--filter",
        f"container={name}",
    ]
    for f in filters:
        args += ["--filter", f]
    return ok(docker(*args, "--format", "{{.Action}}")).splitlines()


def test_health_cmd_becomes_healthy(docker: Callable[..., Run], ctrs: Containers) -> None:
    since = time.time()
    name = ctrs.run("--health-cmd", "echo ok", *FAST)
    health = wait_health(docker, name, "healthy")
    assert health["FailingStreak"] == 0
    entry = health["Log"][-1]
    assert list(entry) == ["Start", "End", "ExitCode", "Output"]
    assert (entry["ExitCode"], entry["Output"]) == (0, "ok\n")
    assert when(entry["Start"]) <= when(entry["End"])
    config = inspect(docker, name)["Config"]["Healthcheck"]
    assert config == {"Test": ["CMD-SHELL", "echo ok"], "Interval": 100_000_000}
    status = ps_status(docker, name)
    assert status.startswith("Up ") and status.endswith(" (healthy)"), status
    assert ps_health(docker, name, "healthy") == [name]
    assert ps_health(docker, name, "starting") == []
    # Five results at most, oldest first.
    deadline = time.monotonic() + 8
    while len(health["Log"]) < 5 or inspect(docker, name)["State"]["Health"]["Log"][0] == health["Log"][0]:
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
        health = inspect(docker, name)["State"]["Health"]
    assert len(inspect(docker, name)["State"]["Health"]["Log"]) == 5
    seen = events(docker, name, since)
    assert seen.count("health_status: healthy") == 1, seen
    assert "exec_create: /bin/sh -c echo ok" in seen and "exec_start: /bin/sh -c echo ok" in seen
    assert "exec_die" in seen
    assert events(docker, name, since, "event=health_status") == ["health_status: healthy"]


def test_failing_cmd_becomes_unhealthy_and_stays_after_stop(
    docker: Callable[..., Run], ctrs: Containers
) -> None:
    since = time.time()
    name = ctrs.run("--health-cmd", "echo bad >&2; exit 1", "--health-retries", "2", *FAST)
    health = wait_health(docker, name, "unhealthy")
    assert health["FailingStreak"] >= 2
    assert {(e["ExitCode"], e["Output"]) for e in health["Log"]} == {(1, "bad\n")}
    assert ps_status(docker, name).endswith(" (unhealthy)")
    assert ps_health(docker, name, "unhealthy") == [name]
    assert events(docker, name, since, "event=health_status") == ["health_status: unhealthy"]
    ok(docker("stop", "-t", "0", name))
    stopped = inspect(docker, name)["State"]["Health"]
    assert stopped["Status"] == "unhealthy"
    assert stopped["FailingStreak"] >= health["FailingStreak"] and stopped["Log"]
    assert ps_status(docker, name).startswith("Exited (")
    time.sleep(0.4)  # the monitor is gone: nothing probes a stopped container
    assert inspect(docker, name)["State"]["Health"] == stopped


def test_restart_resets_to_starting_and_keeps_the_log(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("--health-cmd", "exit 1", "--health-retries", "1", "--health-interval", "1s")
    before = wait_health(docker, name, "unhealthy")
    ok(docker("restart", "-t", "0", name))
    after = inspect(docker, name)["State"]["Health"]  # the next probe is a second away
    assert (after["Status"], after["FailingStreak"]) == ("starting", 0)
    assert after["Log"][: len(before["Log"])] == before["Log"]
    assert ps_status(docker, name).endswith(" (health: starting)")
    wait_health(docker, name, "unhealthy")


def test_starting_until_the_first_probe(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("--health-cmd", "true", "--health-interval", "1h")
    health = inspect(docker, name)["State"]["Health"]
    assert health == {"Status": "starting", "FailingStreak": 0, "Log": []}
    assert ps_status(docker, name).endswith(" (health: starting)")
    assert ps_health(docker, name, "starting") == [name]


def test_start_period_failures_do_not_count(
    docker: Callable[..., Run], ctrs: Containers, daemon: Daemon
) -> None:
    period = ("--health-start-period", "1h", "--health-retries", "1")
    if tuple(map(int, daemon.api_version.split("."))) >= (1, 44):
        period += ("--health-start-interval", "100ms")  # else --health-interval applies throughout
    failing = ctrs.run("--health-cmd", "exit 1", *period, *FAST)
    # Once a probe has passed, the start period is over for the streak: failures count again.
    flapping = ctrs.run("--health-cmd", "test -f /tmp/once && exit 1; touch /tmp/once", *period, *FAST)
    deadline = time.monotonic() + 8
    while len(inspect(docker, failing)["State"]["Health"]["Log"]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    health = inspect(docker, failing)["State"]["Health"]
    assert (health["Status"], health["FailingStreak"]) == ("starting", 0)
    assert {e["ExitCode"] for e in health["Log"]} == {1}
    health = wait_health(docker, flapping, "unhealthy")
    assert health["Log"][0]["ExitCode"] == 0 and health["FailingStreak"] >= 1


def test_pause_reads_unhealthy_and_unpause_probes_again(docker: Callable[..., Run], ctrs: Containers) -> None:
    name = ctrs.run("--health-cmd", "true", *FAST)
    wait_health(docker, name, "healthy")
    ok(docker("pause", name))
    try:
        assert inspect(docker, name)["State"]["Health"]["Status"] == "unhealthy"
        assert ps_status(docker, name).endswith(" (Paused)")
    finally:
        ok(docker("unpause", name))
    wait_health(docker, name, "healthy")


def test_timeout_kills_the_probe(docker: Callable[..., Run], ctrs: Containers, daemon: Daemon) -> None:
    since = time.time()
    # The first probe runs past its timeout; later ones find the mark it left and pass at once.
    # `true` after the sleep keeps the shell from exec-ing it: the sleep is the probe's child.
    probe = "test -f /tmp/probed || { touch /tmp/probed; sleep 30; true; }"
    timings = ("--health-interval", "300ms", "--health-timeout", "300ms", "--health-retries", "1")
    name = ctrs.run("--health-cmd", probe, *timings)
    health = wait_health(docker, name, "healthy")
    first = health["Log"][0]
    assert (first["ExitCode"], first["Output"]) == (-1, "Health check exceeded timeout (300ms)")
    assert events(docker, name, since, "event=health_status") == [
        "health_status: unhealthy",
        "health_status: healthy",
    ]
    dies = events(docker, name, since, "event=exec_die")
    assert dies and set(dies) == {"exec_die"}
    top = ok(docker("top", name, "-o", "pid,args")).splitlines()[1:]
    commands = [line.split(None, 1)[1].strip() for line in top]
    if daemon.is_docker:
        assert "sleep 30" in commands, top  # dockerd kills the probe's shell only
    else:
        assert "sleep 30" not in commands, top


def test_no_healthcheck_over_an_image_healthcheck(
    docker: Callable[..., Run], ctrs: Containers, images: Images
) -> None:
    base = images.load()
    holder = ctrs.run(image=base.tags[0])
    ref = images.track(f"{images.repo('hc')}:latest")
    ok(docker("commit", "-c", "HEALTHCHECK --interval=100ms --retries=2 CMD echo from-image", holder, ref))
    plain = ctrs.run(image=ref)
    health = wait_health(docker, plain, "healthy")
    assert health["Log"][-1]["Output"] == "from-image\n"
    assert inspect(docker, plain)["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "echo from-image"],
        "Interval": 100_000_000,
        "Retries": 2,
    }
    # Flags override single fields of the image's healthcheck.
    merged = ctrs.run("--health-cmd", "echo mine", image=ref)
    assert inspect(docker, merged)["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "echo mine"],
        "Interval": 100_000_000,
        "Retries": 2,
    }
    assert wait_health(docker, merged, "healthy")["Log"][-1]["Output"] == "mine\n"
    disabled = ctrs.run("--no-healthcheck", image=ref)
    info = inspect(docker, disabled)
    # dockerd merges field by field: the image's timings stay beside the NONE.
    assert info["Config"]["Healthcheck"] == {"Test": ["NONE"], "Interval": 100_000_000, "Retries": 2}
    assert "Health" not in info["State"]
    assert ps_status(docker, disabled).startswith("Up ") and "(" not in ps_status(docker, disabled)
    assert ps_health(docker, disabled, "none") == [disabled]


def test_durations_below_a_millisecond_are_refused(docker: Callable[..., Run], busybox: str) -> None:
    res = docker("create", "--health-cmd", "true", "--health-interval", "500us", busybox)
    assert res.rc != 0
    assert "Error response from daemon: Interval in Healthcheck cannot be less than 1ms" in res.stderr


def test_monitors_run_again_after_a_daemon_restart(own_daemon: tuple[Any, Callable[..., Run]]) -> None:
    proc, own = own_daemon
    flags = ("-d", "--stop-timeout", "0", "--health-cmd", "echo up", *FAST)
    ok(own("run", "--name", "always", "--restart", "always", *flags, "busybox", "sleep", "300"))
    ok(own("run", "--name", "plain", *flags, "busybox", "sleep", "300"))
    for name in ("always", "plain"):
        wait_health(own, name, "healthy")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.proc is not None
    proc.proc.wait(timeout=60)
    proc.start()
    # Stopped at shutdown: recorded unhealthy, with the results it had.
    plain = inspect(own, "plain")["State"]
    assert (plain["Running"], plain["Health"]["Status"]) == (False, "unhealthy")
    assert plain["Health"]["Log"] and {e["Output"] for e in plain["Health"]["Log"]} == {"up\n"}
    # Started again by its policy: a fresh run, probed by a fresh monitor.
    health = wait_health(own, "always", "healthy")
    started = inspect(own, "always")["State"]["StartedAt"]
    assert when(health["Log"][-1]["Start"]) > when(started)


def test_raw_api_zero_fields_and_start_interval_before_1_44(
    api: httpx.Client, docker: Callable[..., Run], ctrs: Containers
) -> None:
    name = ctrs.name()
    hc = {"Test": ["CMD", "true"], "Interval": 0, "Timeout": 2 * SECOND, "Retries": 0}
    hc["StartInterval"] = SECOND
    res = api.post(f"/v1.41/containers/create?name={name}", json={"Image": "busybox", "Healthcheck": hc})
    assert res.status_code == 201, res.text
    # Zero fields are omitted (omitempty); StartInterval came with API 1.44 and is dropped before it.
    assert inspect(docker, name)["Config"]["Healthcheck"] == {"Test": ["CMD", "true"], "Timeout": 2 * SECOND}
