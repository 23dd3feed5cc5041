"""Real runc runs of busybox: stdio, TTY, signals, exec, freezer, OOM, reaping, errors."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import resource
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import errdefs
from runtime import cgroups, cgroupstats
from runtime.runc import OciRuntime, RuncTask
from runtime.stdio import FdOutput
from runtime.tests.conftest import RuncEnv
from runtime.types import ConsoleSize, IOSpec, StartError

pytestmark = [pytest.mark.privileged, pytest.mark.timeout(60)]

T = TypeVar("T")


def run(env: RuncEnv, scenario: Callable[[OciRuntime], Awaitable[T]]) -> T:
    async def main() -> T:
        rt = OciRuntime(root=env.root)
        try:
            return await asyncio.wait_for(scenario(rt), 45)
        finally:
            await rt.close()

    fds_before = set(os.listdir("/proc/self/fd"))
    result = asyncio.run(main())
    leaked = set(os.listdir("/proc/self/fd")) - fds_before
    assert not leaked, {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in leaked if fd.isdigit()}
    return result


async def drain(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def run_to_end(task: RuncTask) -> tuple[bytes, bytes, int, Any]:
    out = asyncio.ensure_future(drain(task.stdio.stdout))
    err = asyncio.ensure_future(drain(task.stdio.stderr))
    await task.start()
    status = await task.wait()
    return await out, await err, status.code, status


def zombie_children() -> list[int]:
    me, found = os.getpid(), []
    for tid in os.listdir(f"/proc/{me}/task"):
        try:  # threads (asyncio's child watchers) come and go
            with open(f"/proc/{me}/task/{tid}/children") as f:
                children = f.read().split()
        except FileNotFoundError:
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/stat") as s:
                    if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                        found.append(int(pid))
            except FileNotFoundError:
                continue
    return found


def test_echo_with_pipes_and_exit_code(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sh", "-c", "echo hi; echo oops >&2; exit 3"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        assert (await rt.state(cid))["status"] == "created"
        out, err, code, status = await run_to_end(task)
        assert (out, err, code) == (b"hi\n", b"oops\n", 3)
        assert status.signal is None and not status.oom_killed
        await task.delete()
        assert cid not in await rt.list_ids()
        with pytest.raises(errdefs.NotFound):
            await rt.state(cid)
        layout = rt.cgroup_layout
        assert not any(d.exists() for d in layout.all_dirs(runc_env.cgroup_path(cid)))

    run(runc_env, scenario)
    assert zombie_children() == []


def test_output_is_pumped_before_anyone_reads(runc_env: RuncEnv) -> None:
    # 600 KB is far beyond a pipe's 64 KiB: the process only exits if the daemon keeps reading.
    cid, bundle = runc_env.bundle(["sh", "-c", "yes | head -c 600000"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        status = await task.wait()
        out = await drain(task.stdio.stdout)
        assert status.code == 0 and len(out) == 600000
        await task.delete()

    run(runc_env, scenario)


def test_stdin_pipe_round_trip(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["cat"])
    payload = os.urandom(3 << 20)

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec(stdin=True))
        out = asyncio.ensure_future(drain(task.stdio.stdout))
        await task.start()
        await task.stdio.write_stdin(payload)
        await task.stdio.close_stdin()
        assert await out == payload
        assert (await task.wait()).code == 0
        await task.delete()

    run(runc_env, scenario)


async def read_until(stream: FdOutput, needle: bytes, seen: bytearray) -> None:
    while needle not in seen:
        chunk = await stream.read()
        assert chunk, f"EOF before {needle!r}; got {bytes(seen)!r}"
        seen += chunk


def test_tty_console_socket_and_resize(runc_env: RuncEnv) -> None:
    script = "stty size; read x; stty size; read y; echo done"
    cid, bundle = runc_env.bundle(["sh", "-c", script], terminal=True)

    async def scenario(rt: OciRuntime) -> None:
        io = IOSpec(tty=True, stdin=True, console_size=ConsoleSize(height=24, width=80))
        task = await rt.create(cid, bundle.path, io)
        assert task.stdio.tty and await task.stdio.stderr.read() == b""
        stdout = task.stdio.stdout
        assert isinstance(stdout, FdOutput)
        await task.start()
        seen = bytearray()
        await read_until(stdout, b"24 80", seen)
        await task.resize(100, 30)
        await task.stdio.write_stdin(b"\n")
        await read_until(stdout, b"30 100", seen)
        await task.stdio.write_stdin(b"\n")
        await read_until(stdout, b"done", seen)
        assert (await task.wait()).code == 0
        assert await drain(stdout) is not None  # ends (EIO on the master counts as EOF)
        await task.delete()

    run(runc_env, scenario)


def test_tty_close_stdin_sends_eof(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["cat"], terminal=True)

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec(tty=True, stdin=True))
        out = asyncio.ensure_future(drain(task.stdio.stdout))
        await task.start()
        await task.stdio.write_stdin(b"ping\n")
        await task.stdio.close_stdin()
        status = await task.wait()
        assert status.code == 0
        assert b"ping" in await out
        await task.delete()

    run(runc_env, scenario)


def test_sigterm_kills_with_signal_status(runc_env: RuncEnv) -> None:
    # In its own PID namespace a handler-less init ignores SIGTERM, so share the host's;
    # this also exercises the kill-the-rest-on-exit path for such containers.
    cid, bundle = runc_env.bundle(["sh", "-c", "sleep 100 & exec sleep 100"], pid_namespace=False)

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        procs = rt.cgroup_layout.dir("pids", runc_env.cgroup_path(cid))
        assert procs is not None
        for _ in range(100):
            if len((procs / "cgroup.procs").read_text().split()) == 2:
                break
            await asyncio.sleep(0.02)
        await task.kill("TERM")
        status = await task.wait()
        assert (status.code, status.signal, status.oom_killed) == (143, signal.SIGTERM, False)
        # The background sleep was killed with the init, as containerd's shim does.
        for _ in range(100):
            if not (procs / "cgroup.procs").read_text().split():
                break
            await asyncio.sleep(0.02)
        assert (procs / "cgroup.procs").read_text().split() == []
        assert task.exit_status == status
        with pytest.raises(errdefs.Conflict):
            await task.kill(signal.SIGKILL)
        await task.delete()

    run(runc_env, scenario)


def test_sigkill_in_pid_namespace_and_force_delete(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        with pytest.raises(errdefs.Conflict):
            await task.delete()  # running
        await task.delete(force=True)
        status = await task.wait()
        assert (status.code, status.signal) == (137, 9)
        assert cid not in await rt.list_ids()

    run(runc_env, scenario)
    assert zombie_children() == []


def test_exec_with_exit_code_and_tty(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        proc = await task.exec(
            "e1", {"args": ["sh", "-c", "echo in-exec; exit 5"], "cwd": "/", "env": ["PATH=/bin"]}, IOSpec()
        )
        assert proc.id == "e1" and proc.pid > 0
        assert await drain(proc.stdio.stdout) == b"in-exec\n"
        status = await proc.wait()
        assert (status.code, status.signal) == (5, None)

        io = IOSpec(tty=True, console_size=ConsoleSize(height=40, width=120))
        tproc = await task.exec("e2", {"args": ["stty", "size"], "cwd": "/", "env": ["PATH=/bin"]}, io)
        assert b"40 120" in await drain(tproc.stdio.stdout)
        assert (await tproc.wait()).code == 0
        assert not list(bundle.path.glob("exec-*"))

        with pytest.raises(StartError) as caught:
            await task.exec("e3", {"args": ["nope"], "cwd": "/", "env": ["PATH=/bin"]}, IOSpec())
        assert caught.value.exit_code == 127
        assert caught.value.message == (
            'OCI runtime exec failed: exec failed: unable to start container process: exec: "nope": '
            "executable file not found in $PATH: unknown"
        )
        await task.delete(force=True)

    run(runc_env, scenario)
    assert zombie_children() == []


def test_pause_and_resume_use_the_freezer(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        path = runc_env.cgroup_path(cid)
        await task.pause()
        assert cgroups.freezer_state(rt.cgroup_layout, path) == "FROZEN"
        assert (await rt.state(cid))["status"] == "paused"
        with pytest.raises(errdefs.Conflict):
            await task.pause()
        await task.resume()
        assert cgroups.freezer_state(rt.cgroup_layout, path) == "THAWED"
        assert (await rt.state(cid))["status"] == "running"
        stats = cgroupstats.read_cgroup(rt.cgroup_layout, path)
        assert stats is not None
        assert stats["pids_stats"]["current"] >= 1
        assert stats["memory_stats"]["usage"] > 0
        assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > 0
        await task.update({"pids": {"limit": 50}})
        updated = cgroupstats.read_cgroup(rt.cgroup_layout, path)
        assert updated is not None and updated["pids_stats"]["limit"] == 50
        await task.delete(force=True)

    run(runc_env, scenario)


def test_memory_limit_oom_kill(runc_env: RuncEnv) -> None:
    # dd's 100 MiB block buffer is touched by read(): the init itself outgrows 32 MiB.
    cid, bundle = runc_env.bundle(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"], memory_limit=32 << 20
    )

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        _, _, code, status = await run_to_end(task)
        assert (code, status.signal, status.oom_killed) == (137, 9, True)
        await task.delete()

    run(runc_env, scenario)


def test_orphans_of_a_host_pid_container_are_reaped(runc_env: RuncEnv) -> None:
    # Without a PID namespace, the background sleep is re-parented to us (the subreaper).
    cid, bundle = runc_env.bundle(["sh", "-c", "sleep 0.3 & exit 0"], pid_namespace=False)

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        out = asyncio.ensure_future(drain(task.stdio.stdout))
        await task.start()
        assert (await task.wait()).code == 0
        await out
        await asyncio.sleep(0.5)
        rt.reaper.sweep()
        rt.reaper.sweep()
        assert zombie_children() == []
        await task.delete()

    run(runc_env, scenario)


def test_missing_executable(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["nope"])

    async def scenario(rt: OciRuntime) -> None:
        with pytest.raises(StartError) as caught:
            await rt.create(cid, bundle.path, IOSpec())
        assert caught.value.exit_code == 127
        assert caught.value.message == (
            "failed to create task for container: failed to create shim task: OCI runtime create failed: "
            "runc create failed: unable to start "
            'container process: exec: "nope": executable file not found in $PATH: unknown'
        )
        assert cid not in await rt.list_ids()

    run(runc_env, scenario)


@pytest.mark.parametrize(
    ("args", "needle"), [(["/notexec"], "permission denied"), (["/tmp"], "permission denied")]
)
def test_not_executable(runc_env: RuncEnv, args: list[str], needle: str) -> None:
    cid, bundle = runc_env.bundle(args)

    async def scenario(rt: OciRuntime) -> None:
        with pytest.raises(StartError) as caught:
            await rt.create(cid, bundle.path, IOSpec())
        assert caught.value.exit_code == 126 and needle in caught.value.message

    run(runc_env, scenario)


def test_cleanup_orphan_removes_leftover_state(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        assert cid in await rt.list_ids()
        await rt.cleanup_orphan(cid)
        await rt.cleanup_orphan(cid)  # idempotent
        assert cid not in await rt.list_ids()
        assert (await task.wait()).code == 137
        task.stdio.close()

    run(runc_env, scenario)


def test_bundle_is_kept_while_its_rootfs_is_mounted(runc_env: RuncEnv, tmp_path: Path) -> None:
    import subprocess

    _, bundle = runc_env.bundle(["true"])
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(bundle.rootfs)], check=True)
    try:
        (bundle.rootfs / "precious").write_text("x")
        assert bundle.remove() is False
        assert (bundle.rootfs / "precious").read_text() == "x" and bundle.config_path.exists()
    finally:
        subprocess.run(["umount", str(bundle.rootfs)], check=True)
    assert bundle.remove() is True
    assert not bundle.path.exists()


def test_duplicate_id_is_refused_without_harming_the_first(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        with pytest.raises(errdefs.Conflict):
            await rt.create(cid, bundle.path, IOSpec())
        assert (await rt.state(cid))["status"] == "created"
        await task.delete(force=True)

    run(runc_env, scenario)


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.02, 0.05])
def test_cancelled_create_leaves_nothing_behind(runc_env: RuncEnv, delay: float) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        creating = asyncio.ensure_future(rt.create(cid, bundle.path, IOSpec()))
        await asyncio.sleep(delay)
        creating.cancel()
        try:
            task = await creating
        except asyncio.CancelledError:
            assert cid not in await rt.list_ids()
        else:  # finished before the cancel landed
            await task.delete(force=True)
        assert cid not in await rt.list_ids()

    run(runc_env, scenario)
    assert zombie_children() == []


def test_cancelled_exec_leaves_no_process(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        procs = rt.cgroup_layout.dir("pids", runc_env.cgroup_path(cid))
        assert procs is not None
        for n, delay in enumerate([0.0, 0.005, 0.02, 0.05]):
            spec = {"args": ["sleep", "50"], "cwd": "/", "env": ["PATH=/bin"]}
            execing = asyncio.ensure_future(task.exec(f"e{n}", spec, IOSpec()))
            await asyncio.sleep(delay)
            execing.cancel()
            try:
                proc = await execing
            except asyncio.CancelledError:
                pass
            else:
                await proc.kill("KILL")
                await proc.wait()
        for _ in range(100):
            if len((procs / "cgroup.procs").read_text().split()) == 1:
                break
            await asyncio.sleep(0.02)
        assert (procs / "cgroup.procs").read_text().split() == [str(task.pid)]
        await task.delete(force=True)

    run(runc_env, scenario)
    assert zombie_children() == []


PROBE = (
    "id; pwd; echo HOME=$HOME; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; sort /proc/self/cgroup; "
    "for n in ipc mnt net pid uts; do readlink /proc/self/ns/$n; done; "
    "echo nofile $(ulimit -Sn) $(ulimit -Hn); cat /proc/self/oom_score_adj; ls /proc/self/fd; echo err >&2"
)
NOFILE_256_512 = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]


@functools.cache
def runc_nofile_race() -> bool:
    """Whether ``runc exec`` sometimes runs the process with the NOFILE soft limit raised to the hard one.

    runc sets the exec's rlimits with prlimit(2) on its child, runc init, while that child's Go
    start-up (Go >= 1.19) raises its own NOFILE soft limit to the hard one: when the prlimit
    lands first, the process gets soft = hard. opencontainers/runc#4195, fixed in 1.1.13 and
    1.2.0 (#4265, #4277); Debian 12's runc 1.1.5 (go1.19.8) has it.
    """
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=True).stdout
    runc = re.search(r"^runc version (\d+)\.(\d+)\.(\d+)(\S*)", out, re.M)
    go = re.search(r"^go: go(\d+)\.(\d+)", out, re.M)
    assert runc is not None and go is not None, out
    version = (int(runc[1]), int(runc[2]), int(runc[3]))
    fixed = version >= (1, 2, 0) and not (version == (1, 2, 0) and runc[4].startswith("-rc"))
    fixed = fixed or (1, 1, 13) <= version < (1, 2, 0)
    return not fixed and (int(go[1]), int(go[2])) >= (1, 19)


def split_nofile(out: str) -> tuple[list[str], tuple[int, int]]:
    """The probe's lines but its ``nofile SOFT HARD`` one, and that one's two limits."""
    lines = out.splitlines()
    [line] = [text for text in lines if text.startswith("nofile ")]
    _, soft, hard = line.split()
    return [text for text in lines if text != line], (int(soft), int(hard))


@pytest.fixture
def daemon_nofile_soft_below_hard() -> Iterator[int]:
    """This process (the daemon) with an RLIMIT_NOFILE soft limit under its hard one, as systemd's
    default 1024:524288 is; yields the hard limit. runc (Go) raises the soft one for itself and
    what it starts: an exec without an RLIMIT_NOFILE rlimit gets the hard limit as its soft one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard - 1), hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("user", "rlimits"),
    [
        ({"uid": 0, "gid": 0}, NOFILE_256_512),
        ({"uid": 1000, "gid": 1000, "additionalGids": [1000, 1234]}, NOFILE_256_512),
        ({"uid": 1000, "gid": 1000}, None),
    ],
)
def test_fast_exec_starts_the_same_process_as_runc_exec(
    runc_env: RuncEnv,
    daemon_nofile_soft_below_hard: int,
    user: dict[str, Any],
    rlimits: list[dict[str, Any]] | None,
) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        assert rt.fast_exec is not None
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        caps = ["CAP_KILL", "CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
        spec: dict[str, Any] = {
            "args": ["sh", "-c", PROBE],
            "cwd": "/tmp",
            "env": ["PATH=/bin"],
            "user": user,
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
            "oomScoreAdj": 100,
        }
        if rlimits is not None:
            spec["rlimits"] = rlimits
        seen: list[tuple[str, bytes, int]] = []
        for helper in (rt.fast_exec, None):
            rt.fast_exec = helper
            proc = await task.exec(f"probe-{len(seen)}", dict(spec), IOSpec())
            out, err = await drain(proc.stdio.stdout), await drain(proc.stdio.stderr)
            seen.append((out.decode(), err, (await proc.wait()).code))
        fast, runc = seen
        fast_lines, fast_nofile = split_nofile(fast[0])
        runc_lines, runc_nofile = split_nofile(runc[0])
        assert fast_lines == runc_lines
        assert fast[1:] == runc[1:]
        assert fast[2] == 0 and "CapBnd:\t0000000000000421" in fast[0] and "NoNewPrivs:\t1" in fast[0]
        # The spec's limits as given, else the daemon's hard limit for both (Go's raise in runc):
        # what runc >= 1.1.13 and dockerd's `docker exec` give.
        hard = daemon_nofile_soft_below_hard
        expected = (256, 512) if rlimits else (hard, hard)
        assert fast_nofile == expected
        if rlimits and runc_nofile != expected and runc_nofile == (512, 512):
            assert runc_nofile_race(), "runc >= 1.1.13 sets RLIMIT_NOFILE without the race"
        else:
            assert runc_nofile == expected
        await task.delete(force=True)

    run(runc_env, scenario)
    assert zombie_children() == []


def test_fast_exec_errors_match_runc(runc_env: RuncEnv) -> None:
    cid, bundle = runc_env.bundle(["sleep", "100"])

    async def scenario(rt: OciRuntime) -> None:
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        helper = rt.fast_exec
        for args, cwd in (
            (["nope"], "/"),
            (["/notexec"], "/"),
            (["/tmp"], "/"),
            (["/x/y"], "/"),
            (["true"], "/no"),
        ):
            messages = []
            for current in (helper, None):
                rt.fast_exec = current
                with pytest.raises(StartError) as caught:
                    await task.exec("bad", {"args": args, "cwd": cwd, "env": ["PATH=/bin"]}, IOSpec())
                messages.append((caught.value.message, caught.value.exit_code))
            assert messages[0] == messages[1], args
        rt.fast_exec = helper
        await task.delete(force=True)

    run(runc_env, scenario)
    assert zombie_children() == []


def test_start_through_the_exec_fifo_is_what_runc_start_does(runc_env: RuncEnv) -> None:
    """runc itself reports a container the fast start released as running; an init that died
    before its start gets `runc start`'s own answer, with or without the fast path."""

    async def scenario(rt: OciRuntime) -> None:
        assert rt.fast_lifecycle
        cid, bundle = runc_env.bundle(["sleep", "100"])
        task = await rt.create(cid, bundle.path, IOSpec())
        assert (await rt.state(cid))["status"] == "created"
        await task.start()
        assert not (rt.root / cid / "exec.fifo").exists()
        state = await rt.state(cid)
        assert (state["status"], state["pid"]) == ("running", task.pid)
        assert Path(f"/proc/{task.pid}/comm").read_text().strip() == "sleep"
        await task.kill(signal.SIGKILL)
        assert (await task.wait()).code == 137
        await task.delete()

        messages = []
        for fast in (True, False):
            rt.fast_lifecycle = fast
            cid, bundle = runc_env.bundle(["true"])
            task = await rt.create(cid, bundle.path, IOSpec())
            os.kill(task.pid, signal.SIGKILL)
            await task.wait()
            with pytest.raises(errdefs.EngineError) as err:
                await task.start()
            messages.append((type(err.value), err.value.message))
            await task.delete()
        assert messages[0] == messages[1]

    run(runc_env, scenario)


def test_delete_of_a_stopped_container_is_what_runc_delete_does(runc_env: RuncEnv) -> None:
    """Without a runc process (statedir.py): runc no longer knows the container and its cgroups
    are gone in every hierarchy; a container still running is left to runc."""

    async def scenario(rt: OciRuntime) -> None:
        ran: list[list[str]] = []
        real_run = rt._run

        async def recording(args: list[str], **kw: Any) -> Any:
            ran.append(list(args))
            return await real_run(args, **kw)

        rt._run = recording  # type: ignore[method-assign]
        cid, bundle = runc_env.bundle(["sh", "-c", "sleep 0.1"])
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        assert (await task.wait()).code == 0
        cgroup_dirs = rt.cgroup_layout.all_dirs(runc_env.cgroup_path(cid))
        assert cgroup_dirs and any(d.exists() for d in cgroup_dirs)
        await task.delete(True)
        assert not any(a[:1] == ["delete"] for a in ran), ran
        assert cid not in await rt.list_ids()
        assert not (rt.root / cid).exists() and not any(d.exists() for d in cgroup_dirs)

        cid, bundle = runc_env.bundle(["sleep", "100"])
        task = await rt.create(cid, bundle.path, IOSpec())
        await task.start()
        await task.delete(True)  # running: runc's --force kills it
        assert ["delete", "--force", cid] in ran
        assert (await task.wait()).code == 137
        assert cid not in await rt.list_ids()

    run(runc_env, scenario)
