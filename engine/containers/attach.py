"""Attach and logs sessions, HTTP-free: output as ``(stream, bytes)``, stdin from a connection.

Attach (dockerd's daemon/attach.go + container/stream/attach.go):
- validation happens in ``AttachSession.open`` (404, 409 paused/restarting, 400 detach keys),
  before the API layer hijacks the connection;
- a container that is not running is attached at its next start, subscribed before its first
  byte is pumped: ``docker run`` attaches before it starts the container;
- ``logs=1`` replays the json-file log first, then (``stream=1``) the live output follows;
- stdin is read only when asked for and the container has ``OpenStdin``; at the client's EOF the
  container's stdin is closed for ``StdinOnce`` without a TTY (the session then lasts until the
  output ends), otherwise the session ends; detach keys end it too (``detach`` event);
- the session ends when the container's output ends, or when the client goes away (the API
  layer cancels ``run``).

Logs: ``open_logs`` validates (400 before the lookup, 404, 501 for the ``none`` driver) and
returns an iterator over the file (``logread``); a follower stops when the container's logger
closes (the container stopped), when the daemon shuts down, or when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine import errdefs
from engine.containers.live import LiveContainer
from engine.containers.logconfig import ensure_readable, validate_log_options
from engine.containers.logread import read_log_batches, read_logs
from engine.containers.model import Container
from engine.containers.streams import (
    AttachConnection,
    StdinPump,
    StdinResult,
    Subscription,
    parse_detach_keys,
)

if TYPE_CHECKING:
    from engine.containers.service import ContainerService, PendingAttach

Chunk = tuple[str, bytes]
Writer = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True)
class AttachOptions:
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    logs: bool = False
    stream: bool = False
    detach_keys: str = ""


@dataclass(frozen=True)
class LogsOptions:
    stdout: bool = False
    stderr: bool = False
    follow: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    tail: int | None = None
    timestamps: bool = False
    details: bool = False


class AttachSession:
    """One attach request. ``open`` → (API hijacks) → ``run`` → ``close`` (always)."""

    def __init__(self, service: ContainerService, c: Container, opts: AttachOptions, keys: bytes) -> None:
        self._service = service
        self.container = c
        self.opts = opts
        self.tty = c.tty
        self.use_stdin = opts.stream and opts.stdin and bool(c.config.get("OpenStdin"))
        self._keys = keys
        self._sub: Subscription | None = None
        self._live: LiveContainer | None = None
        self._pending: PendingAttach | None = None
        self._closed = False

    @classmethod
    def open(cls, service: ContainerService, ref: str, opts: AttachOptions) -> AttachSession:
        c = service.get(ref)
        if c.state.paused:
            raise errdefs.Conflict(f"container {ref} is paused, unpause the container before attach")
        if c.state.restarting:
            raise errdefs.Conflict(f"container {ref} is restarting, wait until the container is running")
        keys = parse_detach_keys(opts.detach_keys)
        session = cls(service, c, opts, keys)
        if opts.stream and not opts.logs:
            # Subscribe (or queue for the next start) now: the client may start the container
            # as soon as it has read the response head, before ``run`` is scheduled.
            session._subscribe()
        service.publish(c, "attach")
        return session

    def _subscribe(self) -> None:
        live = self._service.live.get(self.container.id)
        if live is not None and not live.output.closed:
            self._live = live
            self._sub = live.output.subscribe(stdout=self.opts.stdout, stderr=self.opts.stderr)
        else:
            self._pending = self._service.attach_next_start(
                self.container.id, stdout=self.opts.stdout, stderr=self.opts.stderr
            )

    async def _attached(self) -> tuple[LiveContainer, Subscription]:
        if self._sub is None and self._pending is None:
            self._subscribe()
        if self._sub is None:
            assert self._pending is not None
            self._live, self._sub = await asyncio.shield(self._pending.future)
        assert self._live is not None and self._sub is not None
        return self._live, self._sub

    def output(self) -> AsyncGenerator[Chunk, None]:
        """The log replay (``logs``), then the live output until it ends (``stream``)."""
        return self._output()

    async def _output(self) -> AsyncGenerator[Chunk, None]:
        if self.opts.logs and self.container.log_path and (self.opts.stdout or self.opts.stderr):
            async with contextlib.aclosing(
                read_logs(Path(self.container.log_path), stdout=self.opts.stdout, stderr=self.opts.stderr)
            ) as replay:
                async for item in replay:
                    yield item
        if not self.opts.stream:
            return
        _, sub = await self._attached()
        async for item in sub:
            yield item

    async def run(self, conn: AttachConnection, write: Writer) -> None:
        """Copy output to ``write`` and (if attached) ``conn`` to the container's stdin until done."""
        out: asyncio.Task[None] = asyncio.ensure_future(self._copy_out(write))
        stdin = asyncio.ensure_future(self._pump_stdin(conn)) if self.use_stdin else None
        try:
            if stdin is not None:
                await asyncio.wait([out, stdin], return_when=asyncio.FIRST_COMPLETED)
                if not out.done():
                    result = stdin.result()
                    if result is StdinResult.DETACHED:
                        self._service.publish(self.container, "detach")
                        return
                    if result is StdinResult.EOF:
                        return
                    # STDIN_CLOSED: the process saw EOF; its output still goes to the client.
            await out
        finally:
            for task in (out, stdin):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(out, *([stdin] if stdin is not None else []), return_exceptions=True)
            self.close()

    async def _copy_out(self, write: Writer) -> None:
        async with contextlib.aclosing(self._output()) as chunks:
            async for stream, data in chunks:
                await write(stream, data)

    async def _pump_stdin(self, conn: AttachConnection) -> StdinResult:
        live, _ = await self._attached()
        pump = StdinPump(
            conn,
            live.task.stdio,
            tty=self.tty,
            stdin_once=bool(self.container.config.get("StdinOnce")),
            detach_keys=self._keys,
        )
        return await pump.run()

    def close(self) -> None:
        """Release the subscription or the queued attach; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pending is not None and not self._pending.future.done():
            self._pending.future.cancel()
        elif self._pending is not None and not self._pending.future.cancelled():
            _, sub = self._pending.future.result()
            sub.close()
        if self._sub is not None:
            self._sub.close()


def open_logs(
    service: ContainerService, ref: str, opts: LogsOptions
) -> tuple[Container, AsyncIterator[list[Chunk]]]:
    """Validate (dockerd's order) and return the container and its log entries, in batches."""
    validate_log_options(stdout=opts.stdout, stderr=opts.stderr)
    c = service.get(ref)
    ensure_readable(str((c.host_config.get("LogConfig") or {}).get("Type") or ""))
    return c, _read(service, c, opts)


async def _read(service: ContainerService, c: Container, opts: LogsOptions) -> AsyncIterator[list[Chunk]]:
    if not c.log_path:  # never started: no log yet
        return
    stop = asyncio.Event()

    async def stop_at_shutdown() -> None:
        await service.events.wait_closed()
        stop.set()

    watcher = asyncio.ensure_future(stop_at_shutdown())
    try:
        async with contextlib.aclosing(
            read_log_batches(
                Path(c.log_path),
                stdout=opts.stdout,
                stderr=opts.stderr,
                since_ns=opts.since_ns,
                until_ns=opts.until_ns,
                tail=opts.tail,
                timestamps=opts.timestamps,
                follow=opts.follow,
                stop=stop,
                details=opts.details,
            )
        ) as batches:
            async for batch in batches:
                yield batch
    finally:
        watcher.cancel()
