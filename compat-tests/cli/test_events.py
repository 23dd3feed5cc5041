"""`docker events` with the real CLI: replay with --since/--until (unix seconds, RFC 3339 and
durations, which the CLI converts to unix seconds before sending), the live stream, --filter and
--format, and the attributes dockerd gives each object change.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Replays are scoped by
filters on what the test made, so a shared daemon's other events never matter. Network
connect/disconnect events are left to the networking tests: a container filter hides them.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import CASE_LABEL, DOCKER_CLI, Daemon, Run, cli_env, ok

_names = itertools.count()
Events = list[dict[str, Any]]
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d)"  # RFC3339NanoFixed


class Made:
    """Containers, volumes and images a test made, removed at teardown even when it fails."""

    def __init__(self, docker: Callable[..., Run], token: str) -> None:
        self.docker = docker
        self.case = f"events-{token}-{next(_names)}"
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.images: list[str] = []

    def name(self, hint: str) -> str:
        return f"skifftest-{hint}-{self.case}"

    def container(self, hint: str) -> str:
        self.containers.append(self.name(hint))
        return self.containers[-1]

    def volume(self, hint: str) -> str:
        self.volumes.append(self.name(hint))
        return self.volumes[-1]

    def image(self, ref: str) -> str:
        self.images.append(ref)
        return ref

    def cleanup(self) -> None:
        for name in self.containers:
            self.docker("rm", "-f", name)
        for name in self.volumes:
            self.docker("volume", "rm", "-f", name)
        for ref in self.images:
            self.docker("rmi", "-f", ref)


@pytest.fixture
def made(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Made]:
    objects = Made(docker, session_token)
    yield objects
    objects.cleanup()


def replay(docker: Callable[..., Run], since: float, *filters: str) -> Events:
    """The past events since ``since`` (unix seconds) up to now, as dockerd's JSON messages."""
    args = ["events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    out = ok(docker(*args, timeout=30))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def actions(events: Events) -> list[str]:
    return [e["Action"] for e in events]


def attrs(event: dict[str, Any], *keys: str) -> dict[str, str]:
    got: dict[str, str] = event["Actor"]["Attributes"]
    return {k: got[k] for k in keys if k in got}


# --- container life cycle ----------------------------------------------------------------------


def test_container_life_cycle_events(docker: Callable[..., Run], made: Made) -> None:
    name = made.container("life")
    t0 = time.time()
    cid = ok(docker("create", "--name", name, "--label", "tier=web", "busybox", "sleep", "600")).strip()
    ok(docker("start", name))
    ok(docker("exec", name, "true"))
    res = docker("exec", name, "sh", "-c", "exit 3")
    assert res.rc == 3, res
    ok(docker("pause", name))
    ok(docker("unpause", name))
    ok(docker("top", name))
    ok(docker("update", "--cpu-shares", "512", name))
    ok(docker("rename", name, name + "-2"))
    made.containers.append(name + "-2")
    ok(docker("kill", "-s", "USR1", name + "-2"))
    ok(docker("stop", "-t", "1", name + "-2"))
    ok(docker("rm", name + "-2"))
    events = replay(docker, t0, f"container={cid}")
    assert actions(events) == [
        "create",
        "start",
        "exec_create: true ",  # dockerd joins Entrypoint and Args with a space, even for no args
        "exec_start: true ",
        "exec_die",
        "exec_create: sh -c exit 3",
        "exec_start: sh -c exit 3",
        "exec_die",
        "pause",
        "unpause",
        "top",
        "update",
        "rename",
        "kill",
        "kill",
        "kill",  # USR1, then stop's TERM and (sleep ignores TERM as PID 1) KILL after 1s
        "die",
        "stop",
        "destroy",
    ]
    for e in events:
        # The legacy fields dockerd still sends for container events.
        assert (e["Type"], e["status"], e["id"], e["from"], e["scope"]) == (
            "container",
            e["Action"],
            cid,
            "busybox",
            "local",
        )
        assert e["Actor"]["ID"] == cid and e["time"] == e["timeNano"] // 10**9
        assert attrs(e, "image", "tier") == {"image": "busybox", "tier": "web"}
    assert [e["Actor"]["Attributes"]["name"] for e in events[:12]] == [name] * 12
    assert [e["Actor"]["Attributes"]["name"] for e in events[12:]] == [name + "-2"] * 7
    assert events[12]["Actor"]["Attributes"]["oldName"] == "/" + name
    exec_ids = {e["Actor"]["Attributes"]["execID"] for e in events[2:5]}
    assert len(exec_ids) == 1 and re.fullmatch(r"[0-9a-f]{64}", exec_ids.pop())
    assert [attrs(e, "exitCode")["exitCode"] for e in events if e["Action"] == "exec_die"] == ["0", "3"]
    assert [attrs(e, "signal")["signal"] for e in events if e["Action"] == "kill"] == ["10", "15", "9"]
    die = next(e for e in events if e["Action"] == "die")
    assert attrs(die, "exitCode") == {"exitCode": "137"}
    times = [e["timeNano"] for e in events]
    assert times == sorted(times)


def test_run_attach_die_destroy_and_exit_code(docker: Callable[..., Run], made: Made) -> None:
    name = made.container("run")
    t0 = time.time()
    res = docker("run", "--rm", "--name", name, "busybox", "sh", "-c", "exit 2")
    assert res.rc == 2, res
    events = replay(docker, t0, f"container={name}")
    assert actions(events) == ["create", "attach", "start", "die", "destroy"]
    assert attrs(events[3], "exitCode") == {"exitCode": "2"}


def test_oom_precedes_die(docker: Callable[..., Run], made: Made) -> None:
    name = made.container("oom")
    t0 = time.time()
    res = docker(
        "run", "--name", name, "-m", "16m", "--memory-swap", "16m", "busybox", "sh", "-c", "tail /dev/zero"
    )
    assert res.rc == 137, res
    assert ok(docker("inspect", "-f", "{{.State.OOMKilled}}", name)).strip() == "true"
    events = replay(docker, t0, f"container={name}")
    assert actions(events) == ["create", "attach", "start", "oom", "die"]
    assert attrs(events[4], "exitCode") == {"exitCode": "137"}


def test_cp_export_commit_events(docker: Callable[..., Run], made: Made, tmp_path: Path) -> None:
    name = made.container("cp")
    repo = made.image(f"skifftest-commit-{made.case}:v1")
    ok(docker("run", "-d", "--name", name, "busybox", "sleep", "600"))
    src = tmp_path / "f.txt"
    src.write_text("hi\n")
    t0 = time.time()
    ok(docker("cp", src, f"{name}:/tmp/"))
    ok(docker("cp", f"{name}:/tmp/f.txt", tmp_path / "back.txt"))
    ok(docker("diff", name))  # no event
    ok(docker("commit", "-m", "msg", name, repo))
    ok(docker("export", "-o", tmp_path / "fs.tar", name))
    events = replay(docker, t0, f"container={name}")
    assert actions(events) == ["extract-to-dir", "archive-path", "pause", "commit", "unpause", "export"]
    image_id = ok(docker("image", "inspect", "-f", "{{.Id}}", repo)).strip()
    assert attrs(events[3], "comment", "imageID", "imageRef") == {
        "comment": "msg",
        "imageID": image_id,
        "imageRef": repo,
    }


# --- volumes -----------------------------------------------------------------------------------


def test_volume_events(docker: Callable[..., Run], made: Made, tmp_path: Path) -> None:
    vol = made.volume("vol")
    name = made.container("vol")
    t0 = time.time()
    ok(docker("volume", "create", vol))
    cid = ok(docker("run", "-d", "--name", name, "-v", f"{vol}:/data:ro", "busybox", "sleep", "600")).strip()
    src = tmp_path / "f.txt"
    src.write_text("hi\n")
    ok(docker("cp", src, f"{name}:/tmp/"))
    ok(docker("rm", "-f", name))
    ok(docker("volume", "rm", vol))
    events = replay(docker, t0, "type=volume", f"volume={vol}")
    # A named volume given to `run` is "created" again (dockerd's volume service logs it on every
    # Create); `docker cp` mounts the container's volumes twice (stat, then extract).
    assert actions(events) == [
        "create",
        "create",
        "mount",
        "mount",
        "unmount",
        "mount",
        "unmount",
        "unmount",
        "destroy",
    ]
    for e in events:
        assert "status" not in e and "id" not in e and "from" not in e  # only for containers and images
        assert e["Type"] == "volume" and e["Actor"]["ID"] == vol and e["scope"] == "local"
    assert events[0]["Actor"]["Attributes"] == {"driver": "local"}
    assert events[2]["Actor"]["Attributes"] == {
        "container": cid,
        "destination": "/data",
        "driver": "local",
        "propagation": "",
        "read/write": "false",
    }
    assert events[4]["Actor"]["Attributes"] == {"container": cid, "driver": "local"}
    assert events[-1]["Actor"]["Attributes"] == {"driver": "local"}


# --- images ------------------------------------------------------------------------------------


def test_image_events(docker: Callable[..., Run], made: Made, images: Any, tmp_path: Path) -> None:
    built = images.load(tags=[images.repo() + ":a"], labels={"tier": "img"})
    t0 = time.time()
    ok(docker("tag", built.tags[0], images.repo() + ":b"))
    ok(docker("save", "-o", tmp_path / "img.tar", images.repo() + ":b"))
    ok(docker("rmi", images.repo() + ":b"))
    ok(docker("rmi", built.tags[0]))
    ok(docker("load", "-i", tmp_path / "img.tar"))
    events = replay(docker, t0, "type=image", f"image={built.id}")
    assert actions(events)[:5] == ["tag", "save", "untag", "untag", "delete"]
    assert "load" in actions(events)[5:]
    for e in events:
        assert (e["Type"], e["status"], e["id"], e["Actor"]["ID"]) == (
            "image",
            e["Action"],
            built.id,
            built.id,
        )
        assert "from" not in e
    assert events[0]["Actor"]["Attributes"]["name"] == images.repo() + ":b"
    assert events[0]["Actor"]["Attributes"]["tier"] == "img"  # the image's labels
    assert "tier" not in events[4]["Actor"]["Attributes"]  # deleted: no labels left to read
    # The repository name (tag stripped) selects the tag event by its "name" attribute.
    by_repo = replay(docker, t0, "type=image", f"image={images.repo()}")
    assert "tag" in actions(by_repo)


# --- filters -----------------------------------------------------------------------------------


def test_event_filter_prefixes_exec_and_ors_values(docker: Callable[..., Run], made: Made) -> None:
    name = made.container("exec")
    t0 = time.time()
    ok(docker("run", "-d", "--name", name, "busybox", "sleep", "600"))
    ok(docker("exec", name, "echo", "x"))
    scoped = f"container={name}"
    assert actions(replay(docker, t0, scoped, "event=exec_create")) == ["exec_create: echo x"]
    assert actions(replay(docker, t0, scoped, "event=exec_start", "event=start")) == [
        "start",
        "exec_start: echo x",
    ]
    assert actions(replay(docker, t0, scoped, "event=exec_die")) == ["exec_die"]
    # Without one of those three names, "event" is exact: a full exec action still matches.
    assert actions(replay(docker, t0, scoped, "event=exec_create: echo x")) == ["exec_create: echo x"]
    assert actions(replay(docker, t0, scoped, "event=exec")) == []


def test_label_type_scope_and_name_prefix_filters(docker: Callable[..., Run], made: Made) -> None:
    a, b = made.container("la"), made.container("lb")
    t0 = time.time()
    ok(docker("create", "--name", a, "--label", f"{CASE_LABEL}={made.case}", "--label", "x=1", "busybox"))
    ok(docker("create", "--name", b, "--label", f"{CASE_LABEL}={made.case}", "busybox"))
    case = f"label={CASE_LABEL}={made.case}"
    assert [e["Actor"]["Attributes"]["name"] for e in replay(docker, t0, case)] == [a, b]
    assert [e["Actor"]["Attributes"]["name"] for e in replay(docker, t0, case, "label=x")] == [a]
    assert replay(docker, t0, case, "label=x=2") == []
    assert len(replay(docker, t0, case, "type=container", "scope=local")) == 2
    assert replay(docker, t0, case, "type=image") == []
    assert replay(docker, t0, case, "scope=swarm") == []
    # A name prefix matches, as an ID prefix does.
    assert [e["Actor"]["Attributes"]["name"] for e in replay(docker, t0, case, f"container={a[:-4]}")] == [a]


def test_invalid_filter(docker: Callable[..., Run], daemon: Daemon) -> None:
    res = docker("events", "--since", "1", "--until", "2", "--filter", "bogus=1")
    if daemon.is_docker and daemon.api_version < "1.42":
        assert res.rc == 0, res  # dockerd 20.10 did not validate the keys yet
        return
    assert res.rc != 0
    assert res.stderr.strip() == "Error response from daemon: invalid filter 'bogus'"


def test_since_after_until(docker: Callable[..., Run]) -> None:
    res = docker("events", "--since", "20", "--until", "10")
    assert res.rc != 0
    assert (
        res.stderr.strip()
        == "Error response from daemon: `since` time (20) cannot be after `until` time (10)"
    )


# --- since / until forms and the live stream -------------------------------------------------


def test_since_accepts_rfc3339_and_durations(docker: Callable[..., Run], made: Made) -> None:
    vol = made.volume("when")
    ok(docker("volume", "create", vol))
    start = datetime.fromtimestamp(time.time() - 30, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for since in ("30s", "1m", start):
        # A duration is sent as whole seconds ("--until 0s" would cut off this very second).
        until = f"{time.time():.9f}"
        out = ok(docker("events", "--since", since, "--until", until, "--filter", f"volume={vol}"))
        # The CLI's default format: time, type, action, actor and its attributes.
        assert re.fullmatch(
            rf"{TIMESTAMP} volume create {vol} \(driver=local\)\n",
            out,
        ), (since, out)


def test_until_in_the_future_streams_then_ends(
    docker: Callable[..., Run], made: Made, daemon: Daemon, tmp_path: Path
) -> None:
    vol = made.volume("live")
    until = time.time() + 4
    proc = subprocess.Popen(
        [
            str(DOCKER_CLI),
            "events",
            "--until",
            f"{until:.9f}",
            "--filter",
            f"volume={vol}",
            "--format",
            "{{.Action}}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(daemon.host, tmp_path),
    )
    try:
        time.sleep(1)
        ok(docker("volume", "create", vol))
        ok(docker("volume", "rm", vol))
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.decode().split() == ["create", "destroy"]
    assert time.time() >= until - 0.1  # it ended at --until, not earlier


def test_live_stream_until_the_client_goes_away(
    docker: Callable[..., Run], made: Made, daemon: Daemon, tmp_path: Path
) -> None:
    name = made.container("live")
    proc = subprocess.Popen(
        [str(DOCKER_CLI), "events", "--filter", f"container={name}", "--format", "{{json .}}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(daemon.host, tmp_path),
    )
    try:
        time.sleep(1)
        before = listeners(docker)
        ok(docker("create", "--name", name, "busybox"))
        ok(docker("rm", name))
        assert proc.stdout is not None
        got = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [e["Action"] for e in got] == ["create", "destroy"]
        assert proc.poll() is None  # still streaming
    finally:
        proc.kill()
        proc.wait()
    if daemon.shared:
        return  # other clients of a shared daemon come and go
    deadline = time.time() + 10
    while listeners(docker) >= before and time.time() < deadline:
        time.sleep(0.2)
    assert listeners(docker) == before - 1  # the daemon let go of the gone client


def listeners(docker: Callable[..., Run]) -> int:
    return int(ok(docker("info", "--format", "{{.NEventsListener}}")).strip())
