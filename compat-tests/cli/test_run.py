"""The docker CLI's container life cycle: run (attached, -d, -i, -t, --rm), attach, logs, stop, kill,
restart, rm -f, wait, exit codes, OOM, --init, --user, --read-only, networks, restart policies and
a daemon restart.

Expectations were checked against the reference dockerd (SKIFF_TEST_DOCKER_HOST=...). Every CLI
call runs under `timeout -s KILL` (a non-TTY `docker run` proxies SIGTERM to the container and
keeps running). Each test removes the containers it made, also when it fails.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI_TIMEOUT, DOCKER_CLI, Daemon, Run, cli_env, ok

_counter = itertools.count()


# The reference dockerd runs with --ip-forward=false and warns about it on every run.
_FORWARDING_WARNING = "WARNING: IPv4 forwarding is disabled. Networking will not work.\n"


def err(res: Any) -> str:
    return str(res.stderr).replace(_FORWARDING_WARNING, "")


class Names:
    """Unique container names for one test; every one is removed (rm -f) afterwards."""

    def __init__(self, token: str, docker: Callable[..., Run]) -> None:
        self.prefix = f"skt-{token}-{next(_counter)}"
        self.docker = docker
        self.made: list[str] = []

    def __call__(self, suffix: str = "c") -> str:
        name = f"{self.prefix}-{suffix}"
        self.made.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.made:
            self.docker("rm", "-f", name)


@pytest.fixture(scope="module", autouse=True)
def busybox(docker: Callable[..., Run], busybox_tar: Path) -> None:
    ok(docker("load", "-i", busybox_tar))


@pytest.fixture
def names(session_token: str, docker: Callable[..., Run]) -> Iterator[Names]:
    made = Names(session_token, docker)
    yield made
    made.cleanup()


def inspect(docker: Callable[..., Run], name: str) -> dict[str, Any]:
    data = json.loads(ok(docker("inspect", "--type", "container", name)))
    result: dict[str, Any] = data[0]
    return result


def exists(docker: Callable[..., Run], name: str) -> bool:
    return docker("inspect", "--type", "container", name).rc == 0


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


# --- run ----------------------------------------------------------------------------------------------


def test_run_rm_echo(docker, names):
    name = names()
    res = docker("run", "--rm", "--name", name, "busybox", "echo", "hi")
    assert ok(res) == "hi\n"
    assert err(res) == ""
    assert not exists(docker, name)


def test_run_separates_stdout_and_stderr(docker, names):
    res = docker("run", "--rm", "--name", names(), "busybox", "sh", "-c", "echo out; echo err >&2")
    assert ok(res) == "out\n"
    assert err(res) == "err\n"


def test_run_exit_code(docker, names):
    res = docker("run", "--rm", "--name", names(), "busybox", "sh", "-c", "exit 3")
    assert res.rc == 3


def test_run_command_not_found_is_127(docker, names):
    name = names()
    res = docker("run", "--rm", "--name", name, "busybox", "nope")
    assert res.rc == 127
    assert err(res).startswith("docker: Error response from daemon: ")
    assert 'exec: "nope": executable file not found in $PATH' in res.stderr
    # --rm also applies when the start fails
    assert wait_for(lambda: not exists(docker, name))


def test_run_not_executable_is_126(docker, names):
    res = docker("run", "--rm", "--name", names(), "busybox", "/etc/passwd")
    assert res.rc == 126
    assert "permission denied" in res.stderr


def test_run_interactive_stdin(docker, names):
    res = docker("run", "-i", "--rm", "--name", names(), "busybox", "cat", input=b"x\n")
    assert ok(res) == "x\n"
    res = docker(
        "run", "-i", "--rm", "--name", names("b"), "busybox", "sh", "-c", "cat; exit 7", input=b"abc"
    )
    assert (res.rc, res.stdout) == (7, "abc")


def test_run_large_output(docker, names):
    res = docker(
        "run", "--rm", "--name", names(), "busybox", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' a"
    )
    assert ok(res) == "a" * 3_000_000


def test_run_tty_through_script(daemon: Daemon, tmp_path: Path, names):
    name = names()
    env = cli_env(daemon.host, tmp_path / "cfg")
    command = f"{DOCKER_CLI} run -it --rm --name {name} busybox sh -c 'tty; exit 4'"
    proc = subprocess.run(
        ["timeout", "-s", "KILL", str(CLI_TIMEOUT), "script", "-qec", command, "/dev/null"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    assert proc.returncode == 4, proc
    assert b"/dev/pts/0\r\n" in proc.stdout


class Tmux:
    """A private tmux server (its own socket), killed by the test that made it."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        argv = ["timeout", "-s", "KILL", "20", "tmux", "-S", str(self.socket), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        assert wait_for(lambda: text in self.screen(), timeout), self.screen()
        return self.screen()


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux(tmp_path / "tmux.sock")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-S", str(t.socket), "kill-server"], capture_output=True, timeout=20)


def test_run_it_and_attach_through_tmux(daemon: Daemon, tmp_path: Path, names, tmux):
    name = names()
    env = cli_env(daemon.host, tmp_path / "cfg")
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("DOCKER_HOST", "DOCKER_CONFIG"))
    # --foreground: the CLI must own the terminal (a background process group gets SIGTTIN).
    docker_cli = f"timeout --foreground -s KILL {CLI_TIMEOUT} {DOCKER_CLI}"
    script = f"{exports} {docker_cli} run -it --name {name} busybox sh; echo run-rc=$?; sleep 60"
    tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", script)
    tmux.wait_for("/ #")  # the shell's prompt: keys sent earlier would go to the local tty
    tmux("send-keys", "-t", "t", "echo $((6*7))", "Enter")
    tmux.wait_for("\n42")
    tmux("send-keys", "-t", "t", "stty size", "Enter")
    tmux.wait_for("40 120")
    tmux("resize-window", "-t", "t", "-x", "100", "-y", "30")
    time.sleep(0.3)
    tmux("send-keys", "-t", "t", "stty size", "Enter")
    tmux.wait_for("30 100")
    # ctrl-p ctrl-q detaches and leaves the container running
    tmux("send-keys", "-t", "t", "C-p", "C-q")
    tmux.wait_for("run-rc=0")
    script = f"{exports} {docker_cli} attach {name}; echo attach-rc=$?; sleep 60"
    tmux("kill-session", "-t", "t")
    tmux("new-session", "-d", "-s", "t", "-x", "90", "-y", "20", script)
    time.sleep(1)  # attach prints nothing until the next output: give it time to set raw mode
    tmux("send-keys", "-t", "t", "stty size; exit 9", "Enter")
    screen = tmux.wait_for("attach-rc=9")
    assert "20 90" in screen


def test_run_detached_logs_and_stop(docker, names):
    name = names()
    cid = ok(docker("run", "-d", "--name", name, "busybox", "sh", "-c", "echo started; sleep 300")).strip()
    assert len(cid) == 64
    assert wait_for(lambda: docker("logs", name).stdout == "started\n")
    state = inspect(docker, name)["State"]
    assert state["Status"] == "running" and state["Running"] is True and state["Pid"] > 0
    # sh as PID 1 ignores SIGTERM: stop waits -t seconds, then kills
    started = time.monotonic()
    assert ok(docker("stop", "-t", "1", name)) == f"{name}\n"
    assert 0.9 < time.monotonic() - started < 8
    state = inspect(docker, name)["State"]
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 137, False)
    assert ok(docker("stop", name)) == f"{name}\n"  # already stopped: 304, still success
    assert ok(docker("logs", name)) == "started\n"


def test_logs_follow_ends_when_the_container_stops(docker, names):
    name = names()
    ok(
        docker(
            "run", "-d", "--name", name, "busybox", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done"
        )
    )
    res = docker("logs", "-f", name, timeout=20)
    assert ok(res) == "1\n2\n3\n"


def test_logs_tail_and_timestamps(docker, names):
    name = names()
    ok(docker("run", "--name", name, "busybox", "sh", "-c", "echo a; echo b; sleep 0.2; echo c >&2"))
    res = docker("logs", "--tail", "2", name)
    assert (res.stdout, res.stderr) == ("b\n", "c\n")
    res = docker("logs", "--tail", "1", name)
    assert (res.stdout, res.stderr) == ("", "c\n")  # tail counts both streams
    line = docker("logs", "-t", name).stdout.splitlines()[0]
    stamp, _, text = line.partition(" ")
    assert text == "a" and stamp.endswith("Z") and len(stamp) == 30


# --- attach / wait / kill / restart / rm ------------------------------------------------------------------


def test_attach_gets_output_and_exit_code(docker, names):
    name = names()
    ok(docker("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 1; echo from-attach; exit 2"))
    res = docker("attach", name)
    assert (res.rc, res.stdout) == (2, "from-attach\n")


def test_attach_to_stopped_container_is_refused(docker, names):
    name = names()
    ok(docker("run", "--name", name, "busybox", "true"))
    res = docker("attach", name)
    assert res.rc == 1
    assert res.stderr == "You cannot attach to a stopped container, start it first\n"


def test_wait_prints_the_exit_code(docker, names):
    name = names()
    ok(docker("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 0.5; exit 5"))
    assert ok(docker("wait", name)) == "5\n"
    assert ok(docker("wait", name)) == "5\n"  # not-running: answers at once


def test_kill_stop_restart_rm(docker, names):
    name = names()
    ok(docker("run", "-d", "--name", name, "busybox", "sleep", "300"))
    res = docker("rm", name)
    assert res.rc == 1
    if not docker_is_old(docker):
        assert res.stderr == (
            f'Error response from daemon: cannot remove container "/{name}": container is running: '
            "stop the container before removing or force remove\n"
        )
    assert ok(docker("kill", name)) == f"{name}\n"
    state = inspect(docker, name)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 137)
    res = docker("kill", name)
    assert res.rc == 1
    cid = inspect(docker, name)["Id"]
    assert res.stderr.lower() == (
        f"error response from daemon: cannot kill container: {name}: container {cid} is not running\n"
    )
    assert ok(docker("start", name)) == f"{name}\n"
    pid = inspect(docker, name)["State"]["Pid"]
    assert ok(docker("restart", "-t", "1", name)) == f"{name}\n"
    after = inspect(docker, name)
    assert after["State"]["Running"] is True and after["State"]["Pid"] != pid
    assert ok(docker("rm", "-f", name)) == f"{name}\n"
    assert not exists(docker, name)


def docker_is_old(docker: Callable[..., Run]) -> bool:
    """dockerd 20.10 words some errors differently from dockerd 28 (which skiff follows)."""
    version = docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    return version.startswith("20.")


def test_kill_with_signal_name(docker, names):
    name = names()
    ok(
        docker(
            "run",
            "-d",
            "--name",
            name,
            "busybox",
            "sh",
            "-c",
            "trap 'exit 42' USR1; while :; do sleep 0.1; done",
        )
    )
    time.sleep(0.3)
    ok(docker("kill", "-s", "USR1", name))
    assert ok(docker("wait", name)) == "42\n"
    res = docker("kill", "-s", "NOPE", name)
    assert res.rc == 1 and "Invalid signal: NOPE" in res.stderr


# --- resources and security -----------------------------------------------------------------------------


def test_oom_killed(docker, names):
    name = names()
    res = docker(
        "run",
        "--name",
        name,
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=100M count=1",
    )
    assert res.rc == 137
    state = inspect(docker, name)["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137


def test_init_is_pid_1(docker, names):
    out = ok(docker("run", "--rm", "--init", "--name", names(), "busybox", "ps", "-o", "pid,comm"))
    first = out.splitlines()[1].split()
    assert first == ["1", "docker-init"]


def test_user_by_id_and_name(docker, names):
    assert ok(docker("run", "--rm", "--user", "1000", "--name", names(), "busybox", "id")) == (
        "uid=1000(app) gid=1000(app) groups=1000(app)\n"
    )
    assert ok(docker("run", "--rm", "--user", "app", "--name", names("b"), "busybox", "id", "-u")) == "1000\n"
    res = docker("run", "--rm", "--user", "nobody-here", "--name", names("c"), "busybox", "true")
    assert res.rc == 126 or res.rc == 125
    assert "unable to find user nobody-here" in res.stderr


def test_read_only_rootfs(docker, names):
    res = docker("run", "--rm", "--read-only", "--name", names(), "busybox", "touch", "/x")
    assert res.rc == 1
    assert err(res) == "touch: /x: Read-only file system\n"
    assert (
        ok(docker("run", "--rm", "--read-only", "--name", names("b"), "busybox", "touch", "/dev/shm/x")) == ""
    )


def test_network_none_has_loopback_up(docker, names):
    out = ok(docker("run", "--rm", "--network", "none", "--name", names(), "busybox", "ip", "-o", "addr"))
    assert out.startswith("1: lo    inet 127.0.0.1/8 scope host lo")
    assert "eth0" not in out


def test_network_host_sees_host_interfaces(docker, names):
    def host_ifaces() -> set[str]:
        with open("/proc/net/dev") as f:
            return {line.split(":")[0].strip() for line in f.read().splitlines()[2:]}

    # Other engines on the host add and remove veths meanwhile: bound by the listings around the run.
    before = host_ifaces()
    out = ok(docker("run", "--rm", "--network", "host", "--name", names(), "busybox", "cat", "/proc/net/dev"))
    after = host_ifaces()
    container_ifaces = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    assert before & after <= container_ifaces <= before | after


def test_hostname_and_hosts_files(docker, names):
    name = names()
    out = ok(docker("run", "--name", name, "busybox", "sh", "-c", "hostname; head -1 /etc/hosts"))
    cid = inspect(docker, name)["Id"]
    assert out.splitlines() == [cid[:12], "127.0.0.1\tlocalhost"]


# --- restart policies -----------------------------------------------------------------------------------


def test_restart_policy_on_failure(docker, names):
    name = names()
    ok(docker("run", "-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1"))

    def settled() -> bool:
        data = inspect(docker, name)
        return data["State"]["Status"] == "exited" and data["RestartCount"] == 2

    assert wait_for(settled)
    data = inspect(docker, name)
    assert data["State"]["ExitCode"] == 1
    assert data["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}


def test_restart_policy_with_rm_is_refused(docker, names):
    res = docker("run", "--rm", "--restart", "always", "--name", names(), "busybox", "true")
    assert res.rc == 125
    assert "conflicting options: cannot specify both --restart and --rm" in res.stderr


# --- daemon restart (a daemon of its own, never the shared one) -------------------------------------------


def _stop_daemon(proc: Any, sig: signal.Signals) -> None:
    os.kill(proc.pid, sig)
    proc.proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_daemon_restart_reconciles_state(own_daemon, sig):
    proc, run = own_daemon
    ok(run("run", "-d", "--name", "plain", "--stop-timeout", "1", "busybox", "sleep", "300"))
    ok(
        run(
            "run",
            "-d",
            "--name",
            "always",
            "--restart",
            "always",
            "--stop-timeout",
            "1",
            "busybox",
            "sleep",
            "300",
        )
    )
    ok(
        run(
            "run",
            "-d",
            "--name",
            "unless",
            "--restart",
            "unless-stopped",
            "--stop-timeout",
            "1",
            "busybox",
            "sleep",
            "300",
        )
    )
    ok(run("stop", "-t", "1", "unless"))
    ok(run("run", "-d", "--name", "gone", "--rm", "--stop-timeout", "1", "busybox", "sleep", "300"))
    always_pid = json.loads(ok(run("inspect", "always")))[0]["State"]["Pid"]

    _stop_daemon(proc, sig)
    proc.start()

    plain = json.loads(ok(run("inspect", "plain")))[0]["State"]
    # SIGTERM: the daemon stopped it (TERM ignored by sleep as PID 1, then KILL after 1 s);
    # SIGKILL: the next daemon found it still running and killed it.
    assert (plain["Status"], plain["Running"], plain["ExitCode"]) == ("exited", False, 137)
    always = json.loads(ok(run("inspect", "always")))[0]["State"]
    assert always["Running"] is True and always["Pid"] != always_pid
    unless = json.loads(ok(run("inspect", "unless")))[0]["State"]
    assert unless["Status"] == "exited"
    assert run("inspect", "gone").rc == 1
    # nothing of the dead containers is left mounted or known to runc
    assert ok(run("ps", "-q")).split() == [json.loads(ok(run("inspect", "always")))[0]["Id"][:12]]
    with open("/proc/self/mountinfo") as f:
        mounted = f.read()
    for name in ("plain", "unless"):
        cid = json.loads(ok(run("inspect", name)))[0]["Id"]
        assert f"/bundles/{cid}/rootfs" not in mounted
    ok(run("rm", "-f", "always"))
