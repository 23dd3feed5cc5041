"""reaper.py with plain processes: adopted orphans, signals, and not stealing anyone's children.

PR_SET_CHILD_SUBREAPER needs no privilege; it is set on the pytest process for the run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from runtime.reaper import Reaper, decode_waitid, is_child_subreaper, parse_proc_stat, set_child_subreaper

pytestmark = pytest.mark.timeout(30)

# The child starts a grandchild and exits at once, so the grandchild is re-parented to us.
ORPHAN = """
import os, subprocess, sys
p = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1]],
    start_new_session=sys.argv[2] == "1",
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
print(p.pid, flush=True)
os._exit(0)
"""


def spawn_orphan(code: str, new_session: bool = True) -> int:
    out = subprocess.run(
        [sys.executable, "-c", ORPHAN, code, "1" if new_session else "0"], capture_output=True, check=True
    )
    return int(out.stdout)


@pytest.fixture(autouse=True)
def subreaper() -> None:
    set_child_subreaper()
    assert is_child_subreaper()


def test_parse_proc_stat_handles_odd_comm() -> None:
    assert parse_proc_stat("42 (a) b (c)) Z 7 42 42 0 -1") == ("Z", 7, 42)


def test_decode_waitid() -> None:
    assert decode_waitid(os.CLD_EXITED, 3) == (3, None)
    assert decode_waitid(os.CLD_KILLED, 15) == (143, 15)
    assert decode_waitid(os.CLD_DUMPED, 11) == (139, 11)


def test_watch_collects_an_adopted_orphans_exit_code() -> None:
    async def main() -> None:
        reaper = Reaper()
        try:
            pid = spawn_orphan("import time; time.sleep(0.2); raise SystemExit(7)")
            exit_ = await asyncio.wait_for(reaper.watch(pid), 10)
            assert (exit_.pid, exit_.code, exit_.signal) == (pid, 7, None)
            assert reaper.watch(pid).done()  # gone: a fresh watch cannot find it
        finally:
            await reaper.close()

    asyncio.run(main())


def test_watch_reports_the_killing_signal() -> None:
    async def main() -> None:
        reaper = Reaper()
        try:
            pid = spawn_orphan("import time; time.sleep(30)")
            waiting = reaper.watch(pid)
            assert reaper.watch(pid) is waiting
            os.kill(pid, 9)
            exit_ = await asyncio.wait_for(waiting, 10)
            assert (exit_.code, exit_.signal) == (137, 9)
        finally:
            await reaper.close()

    asyncio.run(main())


def test_send_signal_reaches_only_a_watched_live_process() -> None:
    async def main() -> None:
        reaper = Reaper()
        try:
            pid = spawn_orphan("import time; time.sleep(30)")
            assert not reaper.send_signal(pid, 15)  # not watched: the caller falls back to runc
            waiting = reaper.watch(pid)
            assert reaper.send_signal(pid, 15)
            exit_ = await asyncio.wait_for(waiting, 10)
            assert (exit_.code, exit_.signal) == (143, 15)
            assert not reaper.send_signal(pid, 15)  # reaped and forgotten
        finally:
            await reaper.close()

    asyncio.run(main())


def _is_zombie_child(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, ppid, _ = parse_proc_stat(f.read())
    except FileNotFoundError:
        return False
    return state == "Z" and ppid == os.getpid()


def test_sweep_reaps_foreign_session_zombies_after_a_grace_sweep() -> None:
    reaper = Reaper()
    pid = spawn_orphan("raise SystemExit(0)")
    deadline = time.monotonic() + 5
    while not _is_zombie_child(pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reaper.sweep() == []  # first sighting: only a suspect
    assert reaper.sweep() == [pid]
    assert not _is_zombie_child(pid)


def test_sweep_never_takes_a_child_someone_else_will_wait_for() -> None:
    reaper = Reaper()
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(5)"])
    deadline = time.monotonic() + 5
    while not _is_zombie_child(proc.pid):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reaper.sweep() == [] and reaper.sweep() == []
    assert proc.wait() == 5  # the real status, not ECHILD's fake 0


def test_asyncio_subprocesses_keep_their_exit_codes_while_the_reaper_runs() -> None:
    async def main() -> None:
        reaper = Reaper(sweep_interval=0.01)
        try:
            pid = spawn_orphan("import time; time.sleep(0.3)")
            watched = reaper.watch(pid)  # starts the fast sweep
            codes = []
            for n in range(5):
                proc = await asyncio.create_subprocess_exec(sys.executable, "-c", f"raise SystemExit({n})")
                codes.append(await proc.wait())
            assert codes == [0, 1, 2, 3, 4]
            assert (await asyncio.wait_for(watched, 10)).code == 0
        finally:
            await reaper.close()

    asyncio.run(main())


def test_close_cancels_pending_watches() -> None:
    async def main() -> None:
        reaper = Reaper()
        pid = spawn_orphan("import time; time.sleep(30)")
        waiting = reaper.watch(pid)
        await reaper.close()
        assert waiting.cancelled()
        os.kill(pid, 9)
        os.waitpid(pid, 0)

    asyncio.run(main())
