"""OciRuntime: drives runc (or a runc-compatible binary) as short-lived asyncio subprocesses.

One runc invocation per verb (argv built in runc_cli.py), global `--root` under the exec root. Each
invocation gets its own `--log` file in JSON format: runc's error text ("exec: \\"nope\\":
executable file not found in $PATH") is read from there, because for `create` and `exec`
runc's stderr is the container's stderr pipe. Failures are mapped to errdefs with the
texts containerd/dockerd produce, since the docker CLI picks exit codes 126/127 from them.

There is no shim: `runc create` hands the container init to the daemon (the subreaper, see
reaper.py) and exits; the daemon holds the stdio (stdio.py) and watches the init's pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine import errdefs
from runtime import cgroups, execfifo, fastexec, statedir
from runtime.bundle import Bundle
from runtime.reaper import ChildExit, Reaper, set_child_subreaper
from runtime.runc_cli import (
    command_error,
    create_args,
    create_error,
    delete_args,
    exec_args,
    exec_error,
    global_args,
    kill_args,
    last_error,
    list_args,
    pause_args,
    resume_args,
    start_args,
    state_args,
    update_args,
)
from runtime.stdio import ConsoleSocket, FdStdio, PipeIO, terminal_stdio
from runtime.types import (
    ExitStatus,
    IOSpec,
    Process,
    Runtime,
    Signal,
    Stdio,
    Task,
    parse_signal,
)

T = TypeVar("T")
log = logging.getLogger("skiff.runtime")

CONSOLE_TIMEOUT = 10.0
FORCE_DELETE_WAIT = 10.0

# --- runtime --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    message: str


@dataclass(frozen=True)
class _SpecFacts:
    """What the runtime needs from config.json."""

    cgroups_path: str | None
    own_pid_namespace: bool
    terminal: bool
    # Nothing in the container (seccomp, LSM, user namespace) needs runc to start an exec.
    fast_exec: bool = False

    @classmethod
    def of(cls, spec: dict[str, Any]) -> _SpecFacts:
        linux = spec.get("linux") or {}
        namespaces = linux.get("namespaces") or []
        return cls(
            cgroups_path=linux.get("cgroupsPath") or None,
            own_pid_namespace=any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces),
            terminal=bool((spec.get("process") or {}).get("terminal")),
            fast_exec=fastexec.container_allows(spec),
        )


async def _to_completion(awaitable: Awaitable[T]) -> T:
    """Await a runc verb to its end even if the caller is cancelled meanwhile, then re-raise.

    A create or exec left running in the background would race the caller's undo steps
    (runc delete) and leave a container behind. A second cancellation stops the waiting.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


class OciRuntime:
    """The Runtime over runc. One per daemon; it owns the Reaper and marks the process a subreaper."""

    def __init__(
        self,
        *,
        root: Path,
        log_dir: Path | None = None,
        binary: str = "runc",
        reaper: Reaper | None = None,
        cgroup_layout: cgroups.CgroupLayout | None = None,
        fast_exec: bool = True,
        fast_lifecycle: bool = True,
    ) -> None:
        self.binary = binary
        # runc's own exec costs two Go start-ups; for runc the helper does the same job faster.
        self.fast_exec = fastexec.FastExec() if fast_exec and Path(binary).name == "runc" else None
        # runc's start and its delete of a stopped container are done without it (execfifo.py,
        # statedir.py); other runtimes keep their own.
        self.fast_lifecycle = fast_lifecycle and Path(binary).name == "runc"
        self.root = root
        # Not inside --root: runc treats every directory there as a container's state.
        self.log_dir = log_dir if log_dir is not None else root.with_name(root.name + "-log")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reaper = reaper if reaper is not None else Reaper()
        self._layout = cgroup_layout
        set_child_subreaper()

    @property
    def reaper(self) -> Reaper:
        return self._reaper

    @property
    def cgroup_layout(self) -> cgroups.CgroupLayout:
        if self._layout is None:
            self._layout = cgroups.CgroupLayout.detect()
        return self._layout

    async def _run(
        self,
        args: list[str],
        *,
        input: bytes | None = None,
        stdio: tuple[int, int, int] | None = None,
    ) -> _Result:
        """Run one runc verb; never raises for a non-zero exit (callers map the message)."""
        log = self.log_dir / f"{args[0]}-{uuid.uuid4().hex}.json"
        argv = global_args(self.binary, self.root, log) + args
        try:
            if stdio is not None:
                # create/exec: runc's own stdio is what the container process inherits.
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2]
                )
                await _to_completion(proc.wait())
                out, err = b"", b""
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await _to_completion(proc.communicate(input))
            try:
                log_text = log.read_text()
            except FileNotFoundError:
                log_text = ""
        except FileNotFoundError:
            raise errdefs.Internal(f'exec: "{self.binary}": executable file not found in $PATH') from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                log.unlink()
        returncode = proc.returncode if proc.returncode is not None else -1
        message = ""
        if returncode != 0:
            message = last_error(log_text) or err.decode(errors="replace").strip()
            message = message or f"{args[0]}: exit status {returncode}"
        return _Result(returncode, out, message)

    async def _spawn(
        self, args: list[str], io: IOSpec, console: ConsoleSocket | None
    ) -> tuple[_Result, FdStdio | None, int | None]:
        """Run runc create/exec with the process's stdio; returns the result, stdio or pty master."""
        if console is not None:
            receiving = asyncio.ensure_future(console.receive())
            handed = False
            try:
                devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                try:
                    result = await self._run(args, stdio=(devnull, devnull, devnull))
                finally:
                    os.close(devnull)
                if result.returncode != 0:
                    return result, None, None
                master = await asyncio.wait_for(asyncio.shield(receiving), CONSOLE_TIMEOUT)
                handed = True
                return result, None, master
            finally:
                if not receiving.done():
                    receiving.cancel()
                elif not handed and not receiving.cancelled() and receiving.exception() is None:
                    os.close(receiving.result())
        pipes = PipeIO(io)
        try:
            stdio = pipes.stdio()  # pump from the start: the process may write before we return
            try:
                result = await self._run(
                    args, stdio=(pipes.child_stdin, pipes.child_stdout, pipes.child_stderr)
                )
            except BaseException:
                stdio.close()
                raise
        finally:
            pipes.close()  # child ends: only the container keeps them
        if result.returncode != 0:
            stdio.close()
            return result, None, None
        return result, stdio, None

    async def create(self, id: str, bundle: Path, io: IOSpec) -> RuncTask:
        b = Bundle(bundle)
        facts = _SpecFacts.of(b.read_config())
        if facts.terminal != io.tty:
            raise errdefs.Internal(f"bundle {bundle}: process.terminal={facts.terminal} but tty={io.tty}")
        if (self.root / id).exists():
            # Checked up front so that the undo below can never destroy a container we did not make.
            raise errdefs.Conflict(f"container with id exists: {id}")
        with contextlib.suppress(FileNotFoundError):
            b.init_pid_file.unlink()
        console = ConsoleSocket() if io.tty else None
        stdio: FdStdio | None = None
        try:
            args = create_args(id, bundle, b.init_pid_file, console.path if console else None)
            result, stdio, master = await self._spawn(args, io, console)
            if result.returncode != 0:
                raise create_error(result.message)
            if master is not None:
                stdio = terminal_stdio(master, io)  # owns master from here on
            assert stdio is not None
            pid = b.read_pid(b.init_pid_file)
            exited = self._reaper.watch(pid)  # before any await: see Reaper.watch
        except BaseException:
            if stdio is not None:
                stdio.close()
            await asyncio.shield(self._undo_create(id, b))
            raise
        finally:
            if console is not None:
                console.close()
        return RuncTask(self, id, b, pid, stdio, exited, facts)

    async def _undo_create(self, id: str, bundle: Bundle) -> None:
        # If runc got as far as writing the pid file, the init is already our child: watch it
        # so that the SIGKILL from the forced delete is reaped, not left as a zombie.
        with contextlib.suppress(OSError, ValueError):
            self._reaper.watch(bundle.read_pid(bundle.init_pid_file))
        await self._run(delete_args(id, force=True))

    async def cleanup_orphan(self, id: str) -> None:
        result = await self._run(delete_args(id, force=True))
        if result.returncode != 0 and "does not exist" not in result.message:
            raise command_error(result.message)

    async def list_ids(self) -> list[str]:
        result = await self._run(list_args())
        if result.returncode != 0:
            raise command_error(result.message)
        listed = json.loads(result.stdout or b"null") or []  # runc prints "null" when empty
        return [str(entry["id"]) for entry in listed]

    async def state(self, id: str) -> dict[str, Any]:
        """runc's state JSON (status "created" / "running" / "paused" / "stopped", pid, bundle)."""
        result = await self._run(state_args(id))
        if result.returncode != 0:
            raise command_error(result.message)
        state: dict[str, Any] = json.loads(result.stdout)
        return state

    async def close(self) -> None:
        if self.fast_exec is not None:
            await self.fast_exec.close()
        await self._reaper.close()


class RuncProcess:
    """An exec process; its stdio is live as soon as `Task.exec` returns."""

    def __init__(self, exec_id: str, pid: int, stdio: FdStdio, exited: asyncio.Future[ChildExit]) -> None:
        self._id, self._pid, self._stdio, self._exited = exec_id, pid, stdio, exited

    @property
    def id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdio(self) -> FdStdio:
        return self._stdio

    @property
    def finished(self) -> bool:
        """Exited and its stdio closed: nothing left to release."""
        return self._exited.done() and self._stdio.closed

    async def wait(self) -> ExitStatus:
        child = await asyncio.shield(self._exited)
        return ExitStatus(child.code, child.signal, False, child.exited_at)

    async def kill(self, sig: Signal) -> None:
        number = parse_signal(sig)
        # The pid cannot have been reused: it is our child and is reaped on this same loop,
        # which also resolves _exited, so a live check here is exact.
        if self._exited.done():
            raise errdefs.Conflict(f"exec process {self._id} is not running")
        os.kill(self._pid, number)

    async def resize(self, width: int, height: int) -> None:
        self._stdio.resize(width, height)


class RuncTask:
    def __init__(
        self,
        runtime: OciRuntime,
        id: str,
        bundle: Bundle,
        pid: int,
        stdio: FdStdio,
        exited: asyncio.Future[ChildExit],
        facts: _SpecFacts,
    ) -> None:
        self._runtime = runtime
        self._id = id
        self._bundle = bundle
        self._pid = pid
        self._stdio = stdio
        self._facts = facts
        self._status: ExitStatus | None = None
        self._paused = False
        self._execs: list[RuncProcess] = []
        self._cgroup_procs: list[str] | None = None
        self._done = asyncio.ensure_future(self._finish(exited))

    @property
    def id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def stdio(self) -> FdStdio:
        return self._stdio

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._status

    async def _finish(self, exited: asyncio.Future[ChildExit]) -> ExitStatus:
        child = await exited
        # Read the OOM counter now, while the cgroup still exists (runc delete removes it).
        oom = False
        if self._facts.cgroups_path is not None:
            count = cgroups.oom_kill_count(self._runtime.cgroup_layout, self._facts.cgroups_path)
            oom = bool(count)
        status = ExitStatus(child.code, child.signal, oom, child.exited_at)
        self._status = status
        if not self._facts.own_pid_namespace:
            # Without its own PID namespace the init's exit kills nothing else; containerd's
            # shim then kills the rest of the cgroup, and so do we.
            with contextlib.suppress(errdefs.EngineError):
                await self._runtime._run(kill_args(self._id, 9, all=True))
        return status

    async def start(self) -> None:
        if self._runtime.fast_lifecycle:
            with contextlib.suppress(execfifo.FifoUnavailable):
                await execfifo.release(execfifo.fifo_path(self._runtime.root, self._id), self._done)
                return
        result = await self._runtime._run(start_args(self._id))
        if result.returncode != 0:
            raise command_error(result.message)

    async def kill(self, sig: Signal, all: bool = False) -> None:
        number = parse_signal(sig)
        # Without --all, `runc kill` checks the state and kill(2)s the init; the init's pidfd does
        # that without a runc process (13-19 ms of a `docker stop` here). A paused init is left to
        # runc, which thaws the cgroup for SIGKILL; an exited one to runc's "not running".
        if not all and not self._paused and self._runtime.reaper.send_signal(self._pid, number):
            return
        result = await self._runtime._run(kill_args(self._id, number, all))
        if result.returncode != 0:
            raise command_error(result.message)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._done)

    async def pause(self) -> None:
        self._paused = True  # from before runc freezes, so no signal races past the freeze
        result = await self._runtime._run(pause_args(self._id))
        if result.returncode != 0:
            self._paused = False
            raise command_error(result.message)

    async def resume(self) -> None:
        result = await self._runtime._run(resume_args(self._id))
        if result.returncode != 0:
            raise command_error(result.message)
        self._paused = False

    async def resize(self, width: int, height: int) -> None:
        self._stdio.resize(width, height)

    async def exec(self, exec_id: str, process_spec: dict[str, Any], io: IOSpec) -> RuncProcess:
        spec = dict(process_spec, terminal=io.tty)
        if io.tty and io.console_size is not None:
            spec["consoleSize"] = {"height": io.console_size.height, "width": io.console_size.width}
        helper = self._runtime.fast_exec
        if helper is not None and self._facts.fast_exec and fastexec.eligible(spec, io):
            try:
                process = await self._exec_fast(helper, exec_id, spec, io)
            except fastexec.HelperUnavailable as err:
                log.warning("exec %s through runc: %s", exec_id[:12], err)
            else:
                self._execs = [p for p in self._execs if not p.finished]
                self._execs.append(process)
                return process
        process_file = self._bundle.exec_process_file(exec_id)
        pid_file = self._bundle.exec_pid_file(exec_id)
        process_file.write_text(json.dumps(spec))
        console = ConsoleSocket() if io.tty else None
        stdio: FdStdio | None = None
        try:
            args = exec_args(self._id, process_file, pid_file, console.path if console else None)
            result, stdio, master = await self._runtime._spawn(args, io, console)
            if result.returncode != 0:
                raise exec_error(result.message)
            if master is not None:
                stdio = terminal_stdio(master, io)  # owns master from here on
            assert stdio is not None
            pid = self._bundle.read_pid(pid_file)
            exited = self._runtime.reaper.watch(pid)
        except BaseException:
            if stdio is not None:
                stdio.close()
            # Started but never handed to the caller (cancelled): it must not run on unowned.
            with contextlib.suppress(OSError, ValueError):
                orphan = self._bundle.read_pid(pid_file)
                self._runtime.reaper.watch(orphan)
                os.kill(orphan, signal.SIGKILL)
            raise
        finally:
            if console is not None:
                console.close()
            for path in (process_file, pid_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        process = RuncProcess(exec_id, pid, stdio, exited)
        self._execs = [p for p in self._execs if not p.finished]
        self._execs.append(process)
        return process

    def _container_cgroups(self) -> list[str]:
        if self._cgroup_procs is None:
            with open(f"/proc/{self._pid}/cgroup") as f:
                self._cgroup_procs = fastexec.cgroup_procs(self._runtime.cgroup_layout, f.read())
        return self._cgroup_procs

    async def _exec_fast(
        self, helper: fastexec.FastExec, exec_id: str, spec: dict[str, Any], io: IOSpec
    ) -> RuncProcess:
        """``exec`` through the helper; raises HelperUnavailable (nothing started) to fall back."""
        try:
            procs = self._container_cgroups()
        except OSError as err:  # the init is gone: let runc give its own answer
            raise fastexec.HelperUnavailable(str(err)) from err
        pipes = PipeIO(io)
        stdio = pipes.stdio()
        pid: int | None = None
        exited: asyncio.Future[ChildExit] | None = None
        try:
            child_fds = (pipes.child_stdin, pipes.child_stdout, pipes.child_stderr)
            spawning = asyncio.ensure_future(helper.spawn(self._pid, procs, spec, child_fds))
            try:
                started, errors = await asyncio.shield(spawning)
            except asyncio.CancelledError:
                # Let the request finish so the process it started is killed, not left running.
                await asyncio.wait([spawning])
                if not spawning.cancelled() and spawning.exception() is None:
                    started, errors = spawning.result()
                    pid, exited = started, self._runtime.reaper.watch(started)
                    os.close(errors)
                raise
            pid = started
            exited = self._runtime.reaper.watch(started)  # re-parented to us already; before any await
            pipes.close_child_ends()
            message = (await _to_completion(fastexec.read_to_eof(errors))).decode(errors="replace")
            if message:
                await asyncio.shield(exited)  # it exits 127 right after writing
                raise exec_error(message)
        except BaseException:
            stdio.close()
            pipes.close()
            if pid is not None and exited is not None and not exited.done():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)  # watched: the exit is reaped
            raise
        return RuncProcess(exec_id, started, stdio, exited)

    async def update(self, resources: dict[str, Any]) -> None:
        result = await self._runtime._run(update_args(self._id), input=json.dumps(resources).encode())
        if result.returncode != 0:
            raise command_error(result.message)

    async def delete(self, force: bool = False) -> None:
        if not await self._delete_stopped():
            result = await self._runtime._run(delete_args(self._id, force))
            if result.returncode != 0 and "does not exist" not in result.message:
                raise command_error(result.message)
        if force and not self._done.done():
            # runc delete --force SIGKILLs the init; let the exit be reaped and recorded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._done), FORCE_DELETE_WAIT)
        self._stdio.close()
        for process in self._execs:  # exec stdio the engine did not close itself
            process.stdio.close()
        self._execs.clear()

    async def _delete_stopped(self) -> bool:
        # Only once the init's exit is reaped: runc would call the container stopped too.
        if not self._runtime.fast_lifecycle or self._status is None or not self._facts.own_pid_namespace:
            return False
        return await asyncio.to_thread(statedir.delete_stopped, self._runtime.root / self._id)


if TYPE_CHECKING:

    def _conforms(
        rt: OciRuntime, t: RuncTask, p: RuncProcess, s: FdStdio
    ) -> tuple[Runtime, Task, Process, Stdio]:
        return rt, t, p, s
