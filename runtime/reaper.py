"""Collects the exit status of container processes, which are the daemon's children by adoption.

`runc create` / `runc exec --detach` fork the container process and exit. The daemon marks
itself a child subreaper (PR_SET_CHILD_SUBREAPER), so the kernel re-parents those orphans
to the daemon instead of to PID 1, and only the daemon can learn their exit status.

Design, and why it cannot steal anybody's child:

* Known pids (container inits, exec processes) are watched with a pidfd
  (`os.pidfd_open`) registered through `loop.add_reader`; when it turns readable the process
  has exited and `waitid(P_PIDFD, fd, WEXITED|WNOHANG)` collects exactly that child. A
  pidfd pins the process, so pid reuse cannot make us reap a stranger.
* Nothing here ever calls `waitpid(-1)` or installs a SIGCHLD handler. asyncio's child
  watchers (ThreadedChildWatcher: a thread blocked in `waitpid(pid)`; PidfdChildWatcher),
  uvloop/libuv (waitpid per known handle on SIGCHLD) and `subprocess` all wait for
  *specific* pids, so they and we never compete for the same child.
* Orphans nobody watches still arrive: with a container sharing the host PID namespace
  (`--pid=host`), processes whose parent exits inside the container are re-parented to the
  subreaper, i.e. to us; without a sweep they would stay zombies for the daemon's life. A
  periodic sweep lists our children (`/proc/self/task/*/children`) and reaps a child only if
  all of these hold:
    - it is a zombie and not a watched pid;
    - it is in another session than the daemon: runc's nsexec calls setsid() for every
      container process, while every process the daemon spawns itself (asyncio, subprocess)
      stays in the daemon's session;
    - it was already a zombie at the previous sweep: a process anyone waits for is reaped
      within milliseconds, so an unreaped zombie after a full interval has no waiter.
  Reaping uses `waitid(P_PID, pid, WNOHANG)`, never a wildcard.
  Consequence for the rest of the daemon: do not spawn helpers with
  `start_new_session=True` and leave them unwaited for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass
from datetime import UTC, datetime

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
# What dockerd records when a process's real status is lost (e.g. it was not our child).
UNKNOWN_EXIT_CODE = 255


def set_child_subreaper(enabled: bool = True) -> None:
    """Make this process (all its threads) the reaper of its descendants' orphans, or stop."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_child_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        return False
    return flag.value != 0


@dataclass(frozen=True)
class ChildExit:
    pid: int
    code: int
    signal: int | None
    exited_at: datetime


def decode_waitid(si_code: int, si_status: int) -> tuple[int, int | None]:
    """(exit code, killing signal) from waitid's siginfo, Docker style: killed by N → 128+N."""
    if si_code == os.CLD_EXITED:
        return si_status, None
    if si_code in (os.CLD_KILLED, os.CLD_DUMPED):
        return 128 + si_status, si_status
    return UNKNOWN_EXIT_CODE, None


def parse_proc_stat(text: str) -> tuple[str, int, int]:
    """(state, ppid, session) from /proc/<pid>/stat; comm may hold spaces and parentheses."""
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


class Reaper:
    """Owns the pidfd watches and the orphan sweep of one daemon (one event loop)."""

    def __init__(self, *, sweep_interval: float = 2.0) -> None:
        self._sweep_interval = sweep_interval
        self._watched: dict[int, tuple[int, asyncio.Future[ChildExit]]] = {}
        self._suspects: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, pid: int) -> asyncio.Future[ChildExit]:
        """A future resolved with the exit of ``pid``, a child (by adoption) of this process.

        Call it right after runc has exited, before the next await: the sweep skips watched pids.
        """
        if pid in self._watched:
            return self._watched[pid][1]
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[ChildExit] = loop.create_future()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            future.set_result(ChildExit(pid, UNKNOWN_EXIT_CODE, None, datetime.now(UTC)))
            return future
        self._watched[pid] = (pidfd, future)
        loop.add_reader(pidfd, self._on_exit, pid)
        self._ensure_sweeper(loop)
        return future

    def send_signal(self, pid: int, sig: int) -> bool:
        """Signal a watched ``pid`` through its pidfd, which cannot reach a reused pid; False
        when ``pid`` is not watched or has already exited."""
        entry = self._watched.get(pid)
        if entry is None:
            return False
        try:
            signal.pidfd_send_signal(entry[0], sig)
        except ProcessLookupError:
            return False
        return True

    def _on_exit(self, pid: int) -> None:
        entry = self._watched.get(pid)
        if entry is None:
            return
        pidfd, future = entry
        try:
            result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Not our child (no subreaper, or reaped elsewhere): the exit is known, its code is not.
            code, sig = UNKNOWN_EXIT_CODE, None
        else:
            if result is None:
                return
            code, sig = decode_waitid(result.si_code, result.si_status)
        self._forget(pid)
        if not future.done():
            future.set_result(ChildExit(pid, code, sig, datetime.now(UTC)))

    def _forget(self, pid: int) -> None:
        pidfd, _ = self._watched.pop(pid)
        if self._loop is not None:
            self._loop.remove_reader(pidfd)
        os.close(pidfd)

    def _ensure_sweeper(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep_forever(), name="skiff-reaper-sweep")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep()

    def sweep(self) -> list[int]:
        """Reap orphaned zombies (see the module docstring); returns the pids reaped."""
        me, my_session = os.getpid(), os.getsid(0)
        zombies: set[int] = set()
        for pid in _children(me):
            if pid in self._watched:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state, ppid, session = parse_proc_stat(f.read())
            except (OSError, ValueError):
                continue
            if state == "Z" and ppid == me and session != my_session:
                zombies.add(pid)
        reaped: list[int] = []
        for pid in sorted(zombies & self._suspects):
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
                reaped.append(pid)
        self._suspects = zombies - set(reaped)
        return reaped

    async def close(self) -> None:
        """Stop the sweep and drop every watch (pending waiters are cancelled)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for pid in list(self._watched):
            future = self._watched[pid][1]
            self._forget(pid)
            future.cancel()


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``; orphans are adopted by an arbitrary thread, so ask every one."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return _children_by_scan(pid)
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return found


def _children_by_scan(pid: int) -> list[int]:
    """Fallback for kernels without CONFIG_PROC_CHILDREN: every /proc/<n>/stat with ppid == pid."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                _, ppid, _ = parse_proc_stat(f.read())
        except (OSError, ValueError):
            continue
        if ppid == pid:
            found.append(int(name))
    return found
