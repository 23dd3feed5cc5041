"""`docker exec` with the real CLI: output, exit codes, stdin, TTY size, -e/-u/-w/--privileged, errors.

Checked against the reference dockerd too (SKIFF_TEST_DOCKER_HOST=...). Where dockerd 20.10 and
dockerd 28 (which skiff follows) differ, the test branches on `daemon.is_docker`: 20.10 says
"Container <id> is not running" and reports 126 for a missing executable, 28 says "container
<id> is not running" and 127.
"""

from __future__ import annotations

import itertools
import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DOCKER_CLI, Daemon, Run, cli_env, ok

_names = itertools.count()


@pytest.fixture(scope="module")
def started(docker: Callable[..., Run], busybox: str, session_token: str) -> Iterator[Callable[..., str]]:
    """`started(*run_args) -> container id`: `docker run -d` a busybox that sleeps; removed at the end."""
    made: list[str] = []

    def start(*args: str, cmd: tuple[str, ...] = ("sleep", "600")) -> str:
        name = f"skifftest-exec-{session_token}-{next(_names)}"
        cid = ok(docker("run", "-d", "--name", name, *args, busybox, *cmd)).strip()
        made.append(cid)
        return cid

    yield start
    for cid in made:
        docker("rm", "-f", cid)


@pytest.fixture(scope="module")
def ctr(started: Callable[..., str]) -> str:
    return started()


def test_exec_echo(docker: Callable[..., Run], ctr: str) -> None:
    res = docker("exec", ctr, "echo", "hi")
    assert (res.rc, res.stdout, res.stderr) == (0, "hi\n", "")


def test_exec_exit_code_and_streams(docker: Callable[..., Run], ctr: str) -> None:
    res = docker("exec", ctr, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (res.rc, res.stdout, res.stderr) == (5, "out\n", "err\n")


def test_exec_stdin_is_piped_and_closed(docker: Callable[..., Run], ctr: str) -> None:
    res = docker("exec", "-i", ctr, "cat", input=b"abc\n")
    assert (res.rc, res.stdout) == (0, "abc\n")
    res = docker("exec", "-i", ctr, "sh", "-c", "cat; exit 7", input=b"xyz")
    assert (res.rc, res.stdout) == (7, "xyz")


def test_exec_env_user_workdir(docker: Callable[..., Run], ctr: str) -> None:
    res = docker("exec", "-e", "FOO=bar", "-u", "app", "-w", "/tmp", ctr, "sh", "-c", "echo $FOO; id -u; pwd")
    assert ok(res) == "bar\n1000\n/tmp\n"
    assert ok(docker("exec", "-u", "1000:65534", ctr, "id", "-g")) == "65534\n"
    assert ok(docker("exec", ctr, "sh", "-c", "id -u; pwd")) == "0\n/\n"


def test_exec_privileged_gets_every_capability(docker: Callable[..., Run], ctr: str, daemon: Daemon) -> None:
    def cap_eff(*flags: str) -> int:
        res = docker("exec", *flags, ctr, "grep", "CapEff", "/proc/self/status")
        if daemon.is_docker and "unable to apply caps" in res.stdout:
            pytest.skip("the reference dockerd's runc 1.1.5 cannot apply every capability of this kernel")
        return int(ok(res).split()[1], 16)

    plain, privileged = cap_eff(), cap_eff("--privileged")
    assert plain & privileged == plain and privileged != plain
    assert privileged & (1 << 21)  # CAP_SYS_ADMIN


def test_exec_unknown_user_fails(docker: Callable[..., Run], ctr: str, daemon: Daemon) -> None:
    res = docker("exec", "-u", "nope", ctr, "true")
    message = "unable to find user nope: no matching entries in passwd file"
    if daemon.is_docker:  # 20.10 looks the user up at start and writes the error into the stream
        assert (res.rc, res.stdout) == (126, message + "\r\n")
    else:  # dockerd >= 25 refuses the exec create with a 400
        assert (res.rc, res.stderr) == (1, f"Error response from daemon: {message}\n")


def test_exec_missing_executable(docker: Callable[..., Run], ctr: str, daemon: Daemon) -> None:
    res = docker("exec", ctr, "nope")
    assert res.rc == (126 if daemon.is_docker else 127)
    assert 'exec: "nope": executable file not found in $PATH' in res.stdout + res.stderr


def test_exec_detached(docker: Callable[..., Run], ctr: str) -> None:
    res = docker("exec", "-d", ctr, "sh", "-c", "echo detached > /tmp/detached")
    assert (res.rc, res.stdout) == (0, "")
    for _ in range(50):
        res = docker("exec", ctr, "cat", "/tmp/detached")
        if res.rc == 0:
            break
    assert ok(res) == "detached\n"


def test_exec_three_megabytes_of_stdout(docker: Callable[..., Run], ctr: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = docker("exec", ctr, "head", "-c", "3145728", "/dev/zero", stdout_file=out)
    assert res.rc == 0, res
    assert out.stat().st_size == 3145728


def test_exec_returns_despite_a_background_child_holding_stdout(docker: Callable[..., Run], ctr: str) -> None:
    # dockerd waits at most ~2 s for the pipes after the exec's exit, then closes them.
    started = time.monotonic()
    res = docker("exec", ctr, "sh", "-c", "sleep 30 & echo started", timeout=20)
    assert (res.rc, res.stdout) == (0, "started\n")
    assert time.monotonic() - started < 8


def test_exec_on_a_stopped_container(
    docker: Callable[..., Run], started: Callable[..., str], daemon: Daemon
) -> None:
    cid = started(cmd=("true",))
    ok(docker("wait", cid))
    res = docker("exec", cid, "true")
    assert res.rc == 1
    word = "Container" if daemon.is_docker else "container"
    assert res.stderr == f"Error response from daemon: {word} {cid} is not running\n"


def test_exec_on_a_paused_container(docker: Callable[..., Run], started: Callable[..., str]) -> None:
    cid = started()
    ok(docker("pause", cid))
    try:
        res = docker("exec", cid, "true")
        assert res.rc == 1
        assert "is paused, unpause the container before exec" in res.stderr
    finally:
        docker("unpause", cid)


def test_exec_unknown_container(docker: Callable[..., Run], busybox: str) -> None:
    res = docker("exec", "skifftest-no-such-container", "true")
    assert res.rc == 1
    assert res.stderr == "Error response from daemon: No such container: skifftest-no-such-container\n"


def test_exec_records_show_in_inspect(docker: Callable[..., Run], ctr: str) -> None:
    ok(docker("exec", "-d", ctr, "sleep", "2"))
    ids = json.loads(ok(docker("inspect", "-f", "{{json .ExecIDs}}", ctr)))
    assert isinstance(ids, list) and len(ids) >= 1 and all(len(i) == 64 for i in ids)


# --- TTY (through `script`, which gives the CLI a terminal) ------------------------------------------


def tty_run(
    daemon: Daemon, tmp_path: Path, shell: str, timeout: int = 60, typed: bytes | None = None
) -> tuple[int, str]:
    """Run `shell` under script(1) with DOCKER_HOST set; returns (rc, output with CRs removed).

    ``typed`` is what script(1) types into the terminal (it waits in the pty until read).
    """
    env = cli_env(daemon.host, tmp_path / "docker-config")
    env["PATH"] = f"{Path(str(DOCKER_CLI)).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    argv = ["timeout", "-s", "KILL", str(timeout), "script", "-qec", shell, "/dev/null"]
    stdin = subprocess.DEVNULL if typed is None else None
    proc = subprocess.run(argv, stdin=stdin, input=typed, capture_output=True, env=env, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace").replace("\r", "")


@pytest.mark.parametrize("wait", ["", "sleep 1; "])
def test_exec_tty_honours_the_console_size(daemon: Daemon, ctr: str, tmp_path: Path, wait: str) -> None:
    """At once: ConsoleSize of the create/start bodies (API >= 1.42); later: the CLI's resize."""
    if daemon.is_docker and not wait:
        pytest.skip("dockerd 20.10 (API 1.41) ignores ConsoleSize; only the later resize sets the size")
    script = f"stty rows 33 cols 111; docker exec -it {shlex.quote(ctr)} sh -c '{wait}stty size'"
    rc, out = tty_run(daemon, tmp_path, script)
    assert rc == 0, out
    # script(1) echoes the NUL the CLI sends at the end as "^@".
    assert "33 111" in [line.replace("^@", "") for line in out.splitlines()], out


def test_exec_it_exit_code_and_tty(daemon: Daemon, ctr: str, tmp_path: Path) -> None:
    cmd = f"docker exec -it {shlex.quote(ctr)} sh -c 'test -t 0 && test -t 1 && echo tty; exit 4'"
    rc, out = tty_run(daemon, tmp_path, cmd)
    assert rc == 4, out
    assert "tty" in out


def test_exec_it_round_trips_input(daemon: Daemon, ctr: str, tmp_path: Path) -> None:
    rc, out = tty_run(
        daemon, tmp_path, f"docker exec -it {shlex.quote(ctr)} sh", typed=b"echo $((6*7)); exit 3\n"
    )
    assert rc == 3, out
    assert "42" in out.splitlines(), out
