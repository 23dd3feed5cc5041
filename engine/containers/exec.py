"""``docker exec``: exec instances kept as dockerd keeps them (daemon/exec.go), in memory only.

An exec is created against a running container (``create``), started once (``start``: detached,
or as an ``ExecSession`` the API runs on a hijacked connection), resized and inspected. As in
dockerd:

- Records live in memory only; a daemon restart forgets them. One never started is dropped when
  its container stops or restarts (dockerd's Cleanup unregisters it). A finished one stays
  inspectable until two garbage-collection passes 5 minutes apart have found it unused
  (execCommandGC; the first pass sets ``CanRemove``). Once its container is removed it is 404.
- ``ExitCode`` and ``Running: false`` are recorded the moment the process exits, before its
  remaining output is drained and before the session's stream ends: the CLI reads
  ``GET /exec/{id}/json`` right after EOF (hijack.md pitfall 5).
- Output is always consumed, with or without a client (detached start, client gone), so the
  process never blocks on a full pipe, and it keeps running when the client goes away (dockerd
  starts it with context.Background()). After the exit a pipe that a leftover writer (a
  daemonised grandchild) keeps open is closed once it has been silent for 2 s (dockerd's
  bounded StreamConfig.Wait); a slow client still gets everything that was written.
- Stdin: ``StdinOnce`` always (client EOF closes the process's stdin, TTY aside); detach keys
  are scanned on the server side too, TTY only (hijack.md pitfall 16).

HTTP-free: the API frames the output (``api/stdcopy``) and writes a start error into the
stream, as dockerd does after it has hijacked the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import errdefs, ids
from engine.containers.logs import StreamName
from engine.containers.model import Container
from engine.containers.spec import exec_process_spec
from engine.containers.streams import (
    DEFAULT_DETACH_KEYS,
    AttachConnection,
    StdinPump,
    StdinResult,
    parse_detach_keys,
)
from engine.containers.userlookup import ResolvedUser, resolve_user
from runtime.types import ConsoleSize, IOSpec, Process, StartError
from storage.jsonfile import read_json

if TYPE_CHECKING:
    from engine.containers.service import ContainerService
    from engine.events import EventBus

log = logging.getLogger("skiff.exec")

# dockerd's execCommandGC tick.
GC_INTERVAL = 300.0
# How long a pipe may stay silent after the exit before a leftover writer is cut off.
OUTPUT_GRACE = 2.0
# dockerd's default when an exec fails to start and nothing better is known (EACCES).
START_FAILURE_EXIT_CODE = 126

OutputWriter = Callable[[StreamName, bytes], Awaitable[None]]


@dataclass
class ExecRecord:
    """One exec instance (dockerd's container.ExecConfig)."""

    id: str
    container_id: str
    # The container's StartedAt when the exec was created: an exec never started does not
    # survive a stop or restart of its container.
    generation: str
    entrypoint: str
    arguments: list[str]
    tty: bool
    privileged: bool
    user: str  # as inspect shows it: the exec's -u, else the container's Config.User
    requested_user: str  # the exec's own -u ("" keeps the container's process user)
    working_dir: str
    env: list[str]
    open_stdin: bool
    open_stdout: bool
    open_stderr: bool
    detach_keys: bytes
    console_size: tuple[int, int] | None
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    can_remove: bool = False
    process: Process | None = field(default=None, repr=False)
    pending_size: tuple[int, int] | None = None  # a resize that came before the process existed

    @property
    def started(self) -> bool:
        return self.running or self.exit_code is not None

    @property
    def command_line(self) -> str:
        # dockerd joins with a space even when there are no arguments ("exec_start: true ").
        return f"{self.entrypoint} {' '.join(self.arguments)}"


class _ExecRun:
    """A started exec's process and output pumps; ``done`` once output is drained and stdio closed."""

    def __init__(self, record: ExecRecord, process: Process, writer: OutputWriter | None) -> None:
        self.record = record
        self.process = process
        self.writer = writer
        self.done = asyncio.Event()
        self.pumps: dict[StreamName, asyncio.Task[None]] = {}
        # When each pump began waiting for its pipe (None while it is delivering a chunk).
        self.idle_since: dict[StreamName, float | None] = {}

    def start_pumps(self) -> None:
        stdio = self.process.stdio
        self.pumps["stdout"] = asyncio.ensure_future(self._pump("stdout", stdio.stdout.read))
        self.pumps["stderr"] = asyncio.ensure_future(self._pump("stderr", stdio.stderr.read))

    async def _pump(self, stream: StreamName, read: Callable[[], Awaitable[bytes]]) -> None:
        loop = asyncio.get_running_loop()
        wanted = self.record.open_stdout if stream == "stdout" else self.record.open_stderr
        while True:
            self.idle_since[stream] = loop.time()
            try:
                chunk = await read()
            except OSError:
                chunk = b""
            self.idle_since[stream] = None
            if not chunk:
                return
            writer = self.writer
            if writer is None or not wanted:
                continue  # nobody attached: consume anyway so the process never blocks
            try:
                await writer(stream, chunk)
            except (ConnectionError, OSError):
                if self.writer is writer:
                    self.writer = None  # the client went away; the process carries on

    async def drain(self) -> None:
        """Wait for the pumps to hit EOF; cut off pipes silent for OUTPUT_GRACE seconds."""
        loop = asyncio.get_running_loop()
        pending = {task for task in self.pumps.values() if not task.done()}
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.1)
            if not pending:
                return
            idle = [self.idle_since.get(s) for s, task in self.pumps.items() if task in pending]
            if all(t is not None and loop.time() - t >= OUTPUT_GRACE for t in idle):
                self.process.stdio.close()
                _, pending = await asyncio.wait(pending, timeout=1.0)
                for task in pending:
                    task.cancel()
                return

    def cancel_pumps(self) -> None:
        for task in self.pumps.values():
            task.cancel()


class ExecSession:
    """A non-detached start, run by the API on the hijacked connection once its head was read.

    ``run`` claims the exec (a second start fails here, as dockerd's does after hijacking),
    starts the process, streams its output through ``write`` and feeds ``stdin`` to it. It
    returns when the process has exited and its output is delivered (the exit code is then
    already recorded), when the detach keys were typed, or at stdin EOF with a TTY. A start
    failure is recorded (exit code 126/127) and raised as an EngineError for the API to write
    into the stream.
    """

    def __init__(self, service: ExecService, exec_id: str, console_size: tuple[int, int] | None) -> None:
        self._service = service
        self.exec_id = exec_id
        self._console_size = console_size

    async def run(self, stdin: AttachConnection | None, write: OutputWriter) -> None:
        record, container = self._service._claim(self.exec_id)
        run = await self._service._launch(record, container, self._console_size, write, with_stdin=True)
        stdin_task: asyncio.Task[StdinResult] | None = None
        if record.open_stdin and stdin is not None:
            pump = StdinPump(
                stdin,
                run.process.stdio,
                tty=record.tty,
                stdin_once=True,
                detach_keys=record.detach_keys or DEFAULT_DETACH_KEYS,
            )
            stdin_task = asyncio.ensure_future(pump.run())
        finished = asyncio.ensure_future(run.done.wait())
        try:
            while not finished.done():
                waiting: set[asyncio.Future[Any]] = {finished}
                if stdin_task is not None:
                    waiting.add(stdin_task)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if stdin_task is None or not stdin_task.done() or finished.done():
                    continue
                result = stdin_task.result()
                stdin_task = None
                if result is StdinResult.DETACHED:
                    self._service._publish(record, container, "exec_detach", {"execID": record.id})
                    return
                if result is StdinResult.EOF:
                    return  # TTY: the client's EOF ends its session, the process keeps running
        finally:
            if run.writer is write:
                run.writer = None
            for task in (stdin_task, finished):
                if task is not None and not task.done():
                    task.cancel()


class ExecService:
    def __init__(self, containers: ContainerService, events: EventBus) -> None:
        self._containers = containers
        self._events = events
        self._records: dict[str, ExecRecord] = {}
        self._last_gc = time.monotonic()

    # -- create --------------------------------------------------------------------

    async def create(self, container_ref: str, body: Mapping[str, Any]) -> ExecRecord:
        """POST /containers/{id}/exec; ``body`` is the ExecOptions JSON (keys as Docker spells them)."""
        self._collect()
        cmd = _str_list(body, "Cmd")
        if not cmd:
            raise errdefs.InvalidParameter("No exec command specified")
        env = _str_list(body, "Env")
        user = _str(body, "User")
        working_dir = _str(body, "WorkingDir")
        console_size = parse_console_size(body.get("ConsoleSize"))
        c = self._active_container(container_ref)
        if user:
            # dockerd >= 25 looks the user up now, so a bad -u fails before anything runs.
            try:
                await self._resolve_user(c, user)
            except errdefs.Internal as err:
                raise errdefs.InvalidParameter(err.message) from err
        keys_spec = _str(body, "DetachKeys")
        detach_keys = parse_detach_keys(keys_spec, for_exec=True) if keys_spec else b""
        record = ExecRecord(
            id=ids.new_id(),
            container_id=c.id,
            generation=c.state.started_at,
            entrypoint=cmd[0],
            arguments=cmd[1:],
            tty=bool(body.get("Tty")),
            privileged=bool(body.get("Privileged")),
            user=user or str(c.config.get("User") or ""),
            requested_user=user,
            working_dir=working_dir or str(c.config.get("WorkingDir") or ""),
            env=env,
            open_stdin=bool(body.get("AttachStdin")),
            open_stdout=bool(body.get("AttachStdout")),
            open_stderr=bool(body.get("AttachStderr")),
            detach_keys=detach_keys,
            console_size=console_size,
        )
        self._records[record.id] = record
        self._publish(record, c, f"exec_create: {record.command_line}", {"execID": record.id})
        return record

    # -- start ---------------------------------------------------------------------

    async def start(
        self, exec_id: str, *, detach: bool, console_size: tuple[int, int] | None = None
    ) -> ExecSession | None:
        """POST /exec/{id}/start.

        Raises (404/409) before anything happens, so the API can answer with JSON before it
        hijacks. Detached: claims and starts the process now (errors raised) and returns None.
        Otherwise returns the session to run on the hijacked connection.
        """
        self._collect()
        self._startable(exec_id)
        if not detach:
            return ExecSession(self, exec_id, console_size)
        record, container = self._claim(exec_id)
        await self._launch(record, container, console_size, None, with_stdin=False)
        return None

    async def start_captured(self, exec_id: str, write: OutputWriter) -> _ExecRun:
        """Start a created exec with its output sent to ``write`` (health probes, see health.py).

        Returns once the process runs; the run's ``done`` is set when it has exited and its
        output is drained.
        """
        record, container = self._claim(exec_id)
        return await self._launch(record, container, None, write, with_stdin=False)

    def _claim(self, exec_id: str) -> tuple[ExecRecord, Container]:
        record, container = self._startable(exec_id)
        if record.exit_code is not None:
            raise errdefs.Conflict(f"Error: Exec command {record.id} has already run")
        if record.running:
            raise errdefs.Conflict(f"Error: Exec command {record.id} is already running")
        record.running = True
        self._publish(record, container, f"exec_start: {record.command_line}", {"execID": record.id})
        return record, container

    async def _launch(
        self,
        record: ExecRecord,
        c: Container,
        console_size: tuple[int, int] | None,
        writer: OutputWriter | None,
        *,
        with_stdin: bool,
    ) -> _ExecRun:
        try:
            live = self._containers.live.get(c.id)
            if live is None:
                raise errdefs.Conflict(f"container {c.id} is not running")
            base_spec = await self._base_spec(c)
            user = await self._resolve_user(c, record.requested_user) if record.requested_user else None
            size = (console_size or record.console_size) if record.tty else None
            box = ConsoleSize(height=size[0], width=size[1]) if size and (size[0] or size[1]) else None
            spec = exec_process_spec(
                base_spec,
                cmd=[record.entrypoint, *record.arguments],
                env=record.env,
                user=user,
                workdir=record.working_dir,
                tty=record.tty,
                privileged=record.privileged,
                config=c.config,
                console_size=size,
            )
            io = IOSpec(tty=record.tty, stdin=record.open_stdin and with_stdin, console_size=box)
            process = await live.task.exec(record.id, spec, io)
        except errdefs.EngineError as err:
            record.running = False
            record.exit_code = err.exit_code if isinstance(err, StartError) else START_FAILURE_EXIT_CODE
            raise
        except OSError as err:
            record.running = False
            record.exit_code = START_FAILURE_EXIT_CODE
            raise errdefs.Internal(f"exec failed: {err}") from err
        pending, record.pending_size = record.pending_size, None
        record.process = process
        record.pid = process.pid
        run = _ExecRun(record, process, writer)
        run.start_pumps()
        if pending is not None:
            await _resize(process, *pending)
        self._containers.spawn(self._monitor(run, c))
        return run

    async def _monitor(self, run: _ExecRun, c: Container) -> None:
        record = run.record
        try:
            status = await run.process.wait()
            # Recorded before the output is drained: whoever sees the stream end finds the
            # exit code already (hijack.md pitfall 5).
            record.exit_code = status.code
            record.running = False
            await run.drain()
            run.process.stdio.close()
            self._publish(record, c, "exec_die", {"execID": record.id, "exitCode": str(status.code)})
        except asyncio.CancelledError:
            run.cancel_pumps()
            raise
        finally:
            with contextlib.suppress(Exception):
                run.process.stdio.close()
            if record.exit_code is None:  # cancelled at daemon shutdown before the exit
                record.running = False
            run.done.set()

    # -- resize / inspect ----------------------------------------------------------

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        """POST /exec/{id}/resize: applied at once, or kept until the process exists (hijack.md 6)."""
        record, _ = self._startable(exec_id)
        height, width = _clamp(height), _clamp(width)
        if record.process is not None and record.running:
            await _resize(record.process, height, width)
        elif record.exit_code is None:
            record.pending_size = (height, width)

    def inspect(self, exec_id: str) -> ExecRecord:
        """GET /exec/{id}/json."""
        self._collect()
        record = self._records.get(exec_id)
        if record is not None and not self._containers.store_has(record.container_id):
            self._records.pop(exec_id, None)  # its container was removed
            record = None
        if record is None or self._drop_if_stale(record):
            raise errdefs.NotFound(f"No such exec instance: {exec_id}")
        return record

    def exec_ids(self, container_id: str) -> list[str]:
        """Container inspect's ``ExecIDs``: execs created or running, not finished ones."""
        return [
            r.id
            for r in list(self._records.values())
            if r.container_id == container_id and r.exit_code is None and not self._drop_if_stale(r)
        ]

    # -- lookups -------------------------------------------------------------------

    def _active_container(self, ref: str) -> Container:
        """dockerd's getActiveContainer (the paused text names the container as the client did)."""
        c = self._containers.get(ref)
        if c.state.restarting:
            raise errdefs.Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if not c.state.running:
            raise errdefs.Conflict(f"container {c.id} is not running")
        if c.state.paused:
            raise errdefs.Conflict(f"Container {ref} is paused, unpause the container before exec")
        return c

    def _startable(self, exec_id: str) -> tuple[ExecRecord, Container]:
        """dockerd's getExecConfig: the exec exists and its container can run it now."""
        record = self._records.get(exec_id)
        if record is None or self._drop_if_stale(record):
            raise errdefs.NotFound(f"No such exec instance: {exec_id}")
        try:
            c = self._containers.get(record.container_id)
        except errdefs.NotFound:
            raise errdefs.no_such_container(exec_id) from None  # sic: dockerd names the exec
        if c.state.restarting:
            raise errdefs.Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if not c.state.running:
            raise errdefs.Conflict(f"container {c.id} is not running")
        if c.state.paused:
            raise errdefs.Conflict(f"Container {c.id} is paused, unpause the container before exec")
        return record, c

    def _drop_if_stale(self, record: ExecRecord) -> bool:
        """Forget an exec never started whose container has stopped or restarted since."""
        if record.started:
            return False
        try:
            c = self._containers.get(record.container_id)
            stale = not c.state.running or c.state.started_at != record.generation
        except errdefs.NotFound:
            stale = True
        if stale:
            self._records.pop(record.id, None)
        return stale

    def _in_use(self, record: ExecRecord) -> bool:
        """Still in its container's exec list (dockerd's c.ExecCommands)."""
        return (
            record.exit_code is None
            and not self._drop_if_stale(record)
            and self._containers.store_has(record.container_id)
        )

    def _collect(self) -> None:
        """dockerd's execCommandGC, run lazily: unused once → CanRemove, unused twice → gone."""
        now = time.monotonic()
        if now - self._last_gc < GC_INTERVAL:
            return
        self._last_gc = now
        for record in list(self._records.values()):
            if record.can_remove:
                self._records.pop(record.id, None)
            elif record.id in self._records and not self._in_use(record):
                record.can_remove = True

    # -- helpers -------------------------------------------------------------------

    async def _base_spec(self, c: Container) -> dict[str, Any]:
        try:
            spec = await asyncio.to_thread(read_json, self._containers.bundle(c.id).config_path)
        except (OSError, ValueError) as err:
            raise errdefs.Internal(f"cannot read the spec of container {c.id}: {err}") from err
        if not isinstance(spec, dict) or not isinstance(spec.get("process"), dict):
            raise errdefs.Internal(f"container {c.id} has no process in its spec")
        return spec

    async def _resolve_user(self, c: Container, user: str) -> ResolvedUser:
        rootfs = self._containers.bundle(c.id).rootfs
        group_add = [str(g) for g in c.host_config.get("GroupAdd") or []]
        return await asyncio.to_thread(resolve_user, user, Path(rootfs), group_add)

    def _publish(self, record: ExecRecord, c: Container, action: str, extra: dict[str, str]) -> None:
        self._containers.publish(c, action, extra)


async def _resize(process: Process, height: int, width: int) -> None:
    # The process may be gone already; the CLI ignores resize failures anyway.
    with contextlib.suppress(OSError, errdefs.EngineError):
        await process.resize(width, height)


def _clamp(value: int) -> int:
    # struct winsize holds unsigned shorts.
    return max(0, min(int(value), 0xFFFF))


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise errdefs.InvalidParameter(f"invalid JSON: {key} must be a string")
    return value


def _str_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errdefs.InvalidParameter(f"invalid JSON: {key} must be an array of strings")
    return list(value)


def parse_console_size(value: Any) -> tuple[int, int] | None:
    """ConsoleSize is Go's *[2]uint: [height, width]; None when absent."""
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) > 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise errdefs.InvalidParameter("invalid JSON: ConsoleSize must be [height, width]")
    height, width = (*value, 0, 0)[:2]
    return int(height), int(width)
