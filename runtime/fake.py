"""FakeRuntime: the Runtime seam without kernel work, for engine unit tests.

A container's "process" is a coroutine chosen by argv[0] from a program table (echo, cat,
sleep, true, false, sh -c "...; exit N" built in; tests add their own). It talks through
in-memory bounded streams with the same interface as the real Stdio, so attach, logs and
exec code paths run unchanged. Signals follow the kernel's default actions unless the
program traps them; `FakeContext.oom()` imitates an OOM kill. Unknown commands fail at
create/exec with runc's own error text, so the engine's 127/126 handling is exercised too.
Every verb is recorded in `FakeRuntime.calls`; `fail_next(verb, error)` injects failures
for unwinding tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs
from runtime.bundle import Bundle
from runtime.fake_programs import (
    BUILTIN_PROGRAMS,
    IGNORED_BY_DEFAULT,
    FakeContext,
    FakeOOMKilled,
    FakeProgram,
    FakeStdio,
    FakeStream,
)
from runtime.runc_cli import create_error, exec_error
from runtime.types import (
    ConsoleSize,
    ExitStatus,
    IOSpec,
    Process,
    Runtime,
    Signal,
    Stdio,
    Task,
    parse_signal,
)

__all__ = [
    "BUILTIN_PROGRAMS",
    "FakeContext",
    "FakeProcess",
    "FakeProgram",
    "FakeRuntime",
    "FakeStdio",
    "FakeStream",
    "FakeTask",
]

_pids = itertools.count(10_000)


class _FakeRun:
    """One running program (a task's init or an exec process)."""

    def __init__(self, program: FakeProgram, ctx: FakeContext) -> None:
        self.program = program
        self.ctx = ctx
        self.pid = next(_pids)
        self.done: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            code = await self.program(self.ctx)
            self._exit(code, None, False)
        except FakeOOMKilled:
            self._exit(137, 9, True)
        except asyncio.CancelledError:
            pass  # killed: _exit was called by signal()

    def _exit(self, code: int, sig: int | None, oom: bool) -> None:
        if not self.done.done():
            self.done.set_result(ExitStatus(code, sig, oom, datetime.now(UTC)))
            # The process is gone: its ends of stdio close, as the kernel would close its fds.
            self.ctx.stdio.stdout.close()
            self.ctx.stdio.stderr.close()

    def signal(self, sig: int) -> None:
        if self.done.done():
            raise errdefs.Conflict("container not running")
        if sig in self.ctx.trapped:
            self.ctx.signals.put_nowait(sig)
        elif sig not in IGNORED_BY_DEFAULT:
            self._exit(128 + sig, sig, False)
            if self.task is not None:
                self.task.cancel()


class FakeProcess:
    def __init__(self, exec_id: str, run: _FakeRun) -> None:
        self._id, self._run = exec_id, run

    @property
    def id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        return self._run.pid

    @property
    def stdio(self) -> FakeStdio:
        return self._run.ctx.stdio

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._run.done)

    async def kill(self, sig: Signal) -> None:
        self._run.signal(parse_signal(sig))

    async def resize(self, width: int, height: int) -> None:
        if self.stdio.tty:
            self._run.ctx.terminal_size = ConsoleSize(height=height, width=width)


class FakeTask:
    def __init__(self, runtime: FakeRuntime, id: str, run: _FakeRun) -> None:
        self._runtime = runtime
        self._id = id
        self._run = run
        self.status = "created"  # runc's words: created / running / paused / stopped
        self.resources: dict[str, Any] = {}
        self.execs: dict[str, FakeProcess] = {}
        run.done.add_done_callback(lambda _: self._stopped())

    def _stopped(self) -> None:
        self.status = "stopped"
        for proc in self.execs.values():
            with contextlib.suppress(errdefs.Conflict):
                proc._run.signal(9)  # the PID namespace dies with its init

    @property
    def id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        return self._run.pid

    @property
    def stdio(self) -> FakeStdio:
        return self._run.ctx.stdio

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._run.done.result() if self._run.done.done() else None

    @property
    def context(self) -> FakeContext:
        return self._run.ctx

    async def start(self) -> None:
        self._runtime._record("start", self._id)
        if self.status != "created":
            raise errdefs.Conflict(f"cannot start a container that has {self.status}")
        self.status = "running"
        self._run.start()

    async def kill(self, sig: Signal, all: bool = False) -> None:
        number = parse_signal(sig)
        self._runtime._record("kill", self._id, number, all)
        self._run.signal(number)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._run.done)

    async def pause(self) -> None:
        self._runtime._record("pause", self._id)
        if self.status != "running":
            raise errdefs.Conflict(f"container not running or already paused ({self.status})")
        self.status = "paused"
        self._run.ctx.running.clear()

    async def resume(self) -> None:
        self._runtime._record("resume", self._id)
        if self.status != "paused":
            raise errdefs.Conflict("container not paused")
        self.status = "running"
        self._run.ctx.running.set()

    async def resize(self, width: int, height: int) -> None:
        if self.stdio.tty:
            self._run.ctx.terminal_size = ConsoleSize(height=height, width=width)

    async def exec(self, exec_id: str, process_spec: dict[str, Any], io: IOSpec) -> FakeProcess:
        self._runtime._record("exec", self._id, exec_id)
        if self.status not in ("running", "created"):
            raise errdefs.Conflict("container not running")
        args = list(process_spec.get("args") or [])
        program = self._runtime._program(args, exec_error, "exec failed")
        ctx = FakeContext(args, list(process_spec.get("env") or []), FakeStdio(io), io.console_size)
        run = _FakeRun(program, ctx)
        run.start()
        process = FakeProcess(exec_id, run)
        self.execs[exec_id] = process
        return process

    async def update(self, resources: dict[str, Any]) -> None:
        self._runtime._record("update", self._id, resources)
        self.resources.update(resources)

    async def delete(self, force: bool = False) -> None:
        self._runtime._record("delete", self._id, force)
        if not self._run.done.done():
            if not force and self.status != "created":
                raise errdefs.Conflict(
                    f"cannot delete container {self._id} that is not stopped: {self.status}"
                )
            self._run.signal(9)
        self.stdio.close()
        self._runtime.tasks.pop(self._id, None)


class FakeRuntime:
    """A Runtime whose containers are coroutines; inspect `tasks` and `calls` in tests."""

    def __init__(self, programs: Mapping[str, FakeProgram] | None = None) -> None:
        self.programs: dict[str, FakeProgram] = {**BUILTIN_PROGRAMS, **(programs or {})}
        self.tasks: dict[str, FakeTask] = {}
        self.calls: list[tuple[Any, ...]] = []
        self._failures: dict[str, errdefs.EngineError] = {}

    def fail_next(self, verb: str, error: errdefs.EngineError) -> None:
        """Make the next call of ``verb`` ("create", "start", "kill", "exec", ...) raise ``error``."""
        self._failures[verb] = error

    def _record(self, verb: str, *args: Any) -> None:
        self.calls.append((verb, *args))
        if verb in self._failures:
            raise self._failures.pop(verb)

    def _program(
        self, args: list[str], wrap: Callable[[str], errdefs.EngineError], prefix: str
    ) -> FakeProgram:
        name = args[0].rsplit("/", 1)[-1] if args else ""
        if name not in self.programs:
            raise wrap(
                f"{prefix}: unable to start container process: exec: "
                f'"{args[0] if args else ""}": executable file not found in $PATH'
            )
        return self.programs[name]

    async def create(self, id: str, bundle: Path, io: IOSpec) -> FakeTask:
        self._record("create", id, bundle, io)
        if id in self.tasks:
            raise errdefs.Conflict(f"container with id exists: {id}")
        process = Bundle(bundle).read_config().get("process") or {}
        args = list(process.get("args") or [])
        program = self._program(args, create_error, "runc create failed")
        size = io.console_size
        if size is None and process.get("consoleSize"):
            size = ConsoleSize(process["consoleSize"]["height"], process["consoleSize"]["width"])
        ctx = FakeContext(args, list(process.get("env") or []), FakeStdio(io), size)
        task = FakeTask(self, id, _FakeRun(program, ctx))
        self.tasks[id] = task
        return task

    async def cleanup_orphan(self, id: str) -> None:
        self._record("cleanup_orphan", id)
        task = self.tasks.pop(id, None)
        if task is not None:
            with contextlib.suppress(errdefs.Conflict):
                task._run.signal(9)
            task.stdio.close()

    async def list_ids(self) -> list[str]:
        return sorted(self.tasks)

    async def state(self, id: str) -> dict[str, Any]:
        self._record("state", id)
        task = self.tasks.get(id)
        if task is None:
            raise errdefs.NotFound(f"container does not exist: {id}")
        # The exit is seen at once, not when the done-callback that sets ``status`` gets its turn.
        status = "stopped" if task.exit_status is not None else task.status
        return {"id": id, "status": status, "pid": task.pid}

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            for run in (*(p._run for p in task.execs.values()), task._run):
                with contextlib.suppress(errdefs.Conflict):
                    run.signal(9)
                if run.task is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await run.task


if TYPE_CHECKING:

    def _conforms(
        rt: FakeRuntime, t: FakeTask, p: FakeProcess, s: FakeStdio
    ) -> tuple[Runtime, Task, Process, Stdio]:
        return rt, t, p, s
