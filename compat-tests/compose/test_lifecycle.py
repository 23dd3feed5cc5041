"""Scenario 6 (lifecycle/): `compose run --rm`, `exec`, `logs -f`, `ps --format json` and
`down -v --remove-orphans`, which must leave no container, network or volume with the project label.

compose finds everything through label filters (project, service, oneoff, config-hash) on
`/containers/json`, `/networks` and `/volumes`; the labels it writes must come back unchanged.
Expected values were checked against dockerd 20.10 with the same compose v2.40.3.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from composekit import PROJECT_LABEL, Project, ok, read_until

ONEOFF = "com.docker.compose.oneoff"


def test_run_rm(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    res = p("run", "--rm", "-T", "app", "sh", "-c", "echo $GREETING; hostname; exit 7")
    assert res.rc == 7, res
    greeting, hostname = res.stdout.split()
    assert greeting == "hello-from-app"
    # Nothing of the one-off is left, and `run` started only what it needed: no service container.
    assert p.container_ids() == []
    assert ok(p.docker("ps", "-aq", "--filter", f"id={hostname}")) == ""
    # The network run created stays until `down`, with compose's labels.
    nets = json.loads(ok(p.docker("network", "inspect", f"{p.name}_default")))
    assert nets[0]["Labels"][PROJECT_LABEL] == p.name
    assert nets[0]["Labels"]["com.docker.compose.network"] == "default"


def test_run_detached_oneoff_labels(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    cid = ok(p("run", "-d", "--name", f"{p.name}-once", "app", "sleep", "30")).strip()
    c = p.inspect(cid)
    labels = c["Config"]["Labels"]
    assert labels[ONEOFF] == "True"
    assert labels["com.docker.compose.service"] == "app"
    assert re.fullmatch(r"[0-9a-f]{64}", labels["com.docker.compose.slug"])
    assert p.container_ids(f"label={ONEOFF}=True") == [c["Id"]]
    assert p.container_ids(f"label={ONEOFF}=False") == []
    # compose ps lists one-off containers too (found through the project label alone).
    assert ok(p("ps", "-a", "--format", "{{.Name}}")).split() == [f"{p.name}-once"]


def test_exec(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    ok(p("up", "-d", "app"))
    assert ok(p("exec", "-T", "app", "sh", "-c", "echo $GREETING")) == "hello-from-app\n"
    assert ok(p("exec", "-T", "-e", "X=1", "-w", "/data", "app", "sh", "-c", "echo $X $(pwd)")) == "1 /data\n"
    res = p("exec", "-T", "app", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (res.rc, res.stdout, res.stderr) == (5, "out\n", "err\n")
    res = p("exec", "-T", "extra", "true")
    assert res.rc == 1
    assert 'service "extra" is not running' in res.stderr


def test_logs_follow(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    ok(p("up", "-d", "app"))
    follow = p.popen("logs", "-f", "--no-color", "app")
    pattern = re.compile(r"^app-1\s+\| line (\d+)$")
    lines = read_until(follow, lambda ls: sum(bool(pattern.match(x)) for x in ls) >= 15, timeout=30)
    numbers = [int(m.group(1)) for m in map(pattern.match, lines) if m]
    assert len(numbers) >= 15, lines
    # From the first line, in order, none lost while following.
    assert numbers == list(range(len(numbers))), numbers
    assert follow.poll() is None
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=10) == 130  # compose ends on SIGINT like a shell: 128 + 2
    assert p.inspect(f"{p.name}-app-1")["State"]["Running"]
    tail = ok(p("logs", "--no-log-prefix", "--tail", "2", "app")).splitlines()
    assert len(tail) == 2 and all(re.fullmatch(r"line \d+", x) for x in tail), tail


def test_ps_json(project: Callable[..., Project], compose_image: str) -> None:
    p = project("lifecycle")
    ok(p("up", "-d"))
    rows = [json.loads(line) for line in ok(p("ps", "--format", "json")).splitlines()]
    assert [r["Service"] for r in rows] == ["app", "extra"]
    for row in rows:
        c = p.inspect(row["Name"])
        assert row["Name"] == row["Names"] == f"{p.name}-{row['Service']}-1"
        assert c["Id"].startswith(row["ID"]) and len(row["ID"]) == 12
        assert row["Project"] == p.name
        assert row["Image"] == compose_image
        assert row["State"] == "running"
        assert row["Status"].startswith("Up ")
        assert row["ExitCode"] == 0
        assert row["Health"] == ""
        assert row["Networks"] == f"{p.name}_default"
        assert row["Publishers"] == []
        labels = dict(kv.split("=", 1) for kv in row["Labels"].split(","))
        assert labels == c["Config"]["Labels"]
        assert labels[PROJECT_LABEL] == p.name
        assert labels[ONEOFF] == "False"
        assert labels["com.docker.compose.container-number"] == "1"
        assert labels["com.docker.compose.project.config_files"] == str(p.file)
        assert labels["com.docker.compose.project.working_dir"] == str(p.dir)
    app, extra = rows
    # The CLI's formatter cuts volume names to 14 characters plus an ellipsis.
    assert app["Mounts"] == f"{p.name}_data"[:14] + "…"
    assert app["LocalVolumes"] == "1"
    assert (extra["Mounts"], extra["LocalVolumes"]) == ("", "0")
    assert "org.skiff.test.role=app" in app["Labels"].split(",")
    # The filters compose itself uses, ANDed.
    only_app = p.container_ids("label=com.docker.compose.service=app", f"label={ONEOFF}=False")
    assert only_app == [p.inspect(app["Name"])["Id"]]
    stopped = ok(p("ps", "--format", "json", "--status", "exited"))
    assert stopped.strip() == ""


def test_down_leaves_nothing(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    ok(p("up", "-d"))
    ok(p("run", "-d", "app", "sleep", "30"))
    ok(p("exec", "-T", "app", "touch", "/data/f"))
    volume = json.loads(ok(p.docker("volume", "inspect", f"{p.name}_data")))[0]
    assert volume["Labels"] == {
        **{k: v for k, v in volume["Labels"].items() if k == "com.docker.compose.config-hash"},
        PROJECT_LABEL: p.name,
        "com.docker.compose.version": volume["Labels"]["com.docker.compose.version"],
        "com.docker.compose.volume": "data",
        "org.skiff.test.role": "data",
    }
    listed = ok(
        p.docker(
            "volume", "ls", "-q", "--filter", p.filter, "--filter", "label=com.docker.compose.volume=data"
        )
    )
    assert listed.split() == [f"{p.name}_data"]
    listed = ok(p.docker("network", "ls", "--format", "{{.Name}}", "--filter", p.filter))
    assert listed.split() == [f"{p.name}_default"]
    left = p.leftovers()
    assert (len(left["containers"]), len(left["networks"]), len(left["volumes"])) == (3, 1, 1)

    # `extra` leaves the file: its container is now an orphan.
    text = p.file.read_text()
    start, end = text.index("  extra:\n"), text.index("volumes:\n  data:")
    p.file.write_text(text[:start] + text[end:])
    res = p("down", "-v", "--remove-orphans", "-t", "1")
    ok(res)
    for name in (f"{p.name}-app-1", f"{p.name}-extra-1"):
        assert f"Container {name}  Removed" in res.stderr
    assert f"Volume {p.name}_data  Removed" in res.stderr
    assert f"Network {p.name}_default  Removed" in res.stderr
    assert p.leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert p.docker("volume", "inspect", f"{p.name}_data").rc == 1


def test_ls(project: Callable[..., Project]) -> None:
    # `compose ls` lists containers with the bare-key filter label=com.docker.compose.project.
    p = project("lifecycle")
    ok(p("up", "-d"))
    ok(p("stop", "-t", "1", "extra"))

    def listed(*flags: str) -> list[dict[str, str]]:
        rows = json.loads(ok(p("ls", "--format", "json", "--filter", f"name={p.name}", *flags)))
        return [row for row in rows if row["Name"] == p.name]

    assert listed() == [{"Name": p.name, "Status": "running(1)", "ConfigFiles": str(p.file)}]
    assert listed("-a") == [{"Name": p.name, "Status": "exited(1), running(1)", "ConfigFiles": str(p.file)}]
    assert p.container_ids("label=com.docker.compose.service=extra", "status=exited") == [
        p.inspect(f"{p.name}-extra-1")["Id"]
    ]


def test_events_follow_restart(project: Callable[..., Project]) -> None:
    # `compose events` reads GET /events filtered by type=container and the project label.
    p = project("lifecycle")
    ok(p("up", "-d", "app"))
    events = p.popen("events", "--json")
    # The stream gives no sign that it is connected: run execs until their events come through.
    subscribed: list[str] = []
    for _ in range(30):
        ok(p("exec", "-T", "app", "true"))
        subscribed = read_until(events, lambda ls: any('"action":"exec_die"' in x for x in ls), timeout=0.5)
        if subscribed:
            break
    assert any('"action":"exec_die"' in x for x in subscribed), subscribed
    ok(p("restart", "-t", "1", "app"))
    lines = read_until(events, lambda ls: any('"action":"restart"' in x for x in ls), timeout=20)
    seen = [e for e in map(json.loads, filter(None, lines)) if not e["action"].startswith("exec_")]
    actions = [e["action"] for e in seen]
    assert actions[-5:] == ["kill", "die", "stop", "start", "restart"], actions
    app_id = p.inspect(f"{p.name}-app-1")["Id"]
    for e in seen[-5:]:
        assert (e["service"], e["id"], e["type"]) == ("app", app_id, "container")
        assert e["attributes"]["name"] == f"{p.name}-app-1"
        assert e["attributes"]["org.skiff.test.role"] == "app"
    assert seen[-5]["attributes"]["signal"] == "15"
    assert seen[-4]["attributes"]["exitCode"] == "0"


def test_pause_kill_cp_top(project: Callable[..., Project], tmp_path: Path) -> None:
    p = project("lifecycle")
    ok(p("up", "-d"))
    ok(p("pause", "app"))
    assert ok(p("ps", "--format", "{{.State}} {{.Status}}", "app")).strip().endswith("(Paused)")
    assert p.inspect(f"{p.name}-app-1")["State"]["Paused"] is True
    ok(p("unpause", "app"))
    assert p.inspect(f"{p.name}-app-1")["State"]["Status"] == "running"

    top = ok(p("top", "app")).splitlines()
    # GET /containers/{id}/top with ps's default columns, the container's main process among them.
    assert top[0].split() == ["SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], top
    main = [line.split(None, 9) for line in top[1:] if "i=0; while true" in line]
    assert len(main) == 1, top
    assert main[0][:3] == ["app", "1", "root"]
    assert main[0][9].startswith("sh -c trap 'exit 0' TERM; i=0;")

    src = tmp_path / "in.txt"
    src.write_text("copied in\n")
    ok(p("cp", str(src), "app:/data/in.txt"))
    assert ok(p("exec", "-T", "app", "cat", "/data/in.txt")) == "copied in\n"
    ok(p("cp", "app:/data/in.txt", str(tmp_path / "out.txt")))
    assert (tmp_path / "out.txt").read_text() == "copied in\n"

    ok(p("kill", "-s", "SIGKILL", "extra"))
    rows = {r["Service"]: r for r in map(json.loads, ok(p("ps", "-a", "--format", "json")).splitlines())}
    assert (rows["extra"]["State"], rows["extra"]["ExitCode"]) == ("exited", 137)
    assert rows["app"]["State"] == "running"


def test_create_start_wait_rm(project: Callable[..., Project]) -> None:
    p = project("lifecycle")
    ok(p("create"))
    states = ok(p("ps", "-a", "--format", "{{.Service}} {{.State}}")).split("\n")
    assert states[:2] == ["app created", "extra created"]
    ok(p("start"))
    assert ok(p("ps", "--format", "{{.Service}}")).split() == ["app", "extra"]
    # `compose wait` blocks on POST /containers/{id}/wait and exits with the container's code. It
    # only waits for running containers and gives no sign of having started waiting: a kill that
    # came first is retried with a longer head start.
    extra_id = p.inspect(f"{p.name}-extra-1")["Id"]
    for head_start in (1.0, 2.0, 4.0):
        ok(p("start", "extra"))
        waiter = p.popen("wait", "extra")
        time.sleep(head_start)
        ok(p.docker("kill", "-s", "KILL", f"{p.name}-extra-1"))
        out = read_until(waiter, lambda ls: False, timeout=20)
        code = waiter.wait(timeout=10)
        if code == 137:
            break
        assert (code, out) == (1, [f'no containers for project "{p.name}"']), out
    assert code == 137
    assert out == [f'container "{extra_id}" exited with status code 137'], out
    res = p("rm", "-f", "-s", "extra")
    ok(res)
    assert f"Container {p.name}-extra-1  Removed" in res.stderr
    assert ok(p("ps", "-a", "--format", "{{.Service}}")).split() == ["app"]
