"""What the daemon holds for a running container: its task, output fan-out, logger and pumps.

Output is pumped from the moment the task exists (hijack.md 17: an unread pipe deadlocks the
container), into the json-file logger (never drops) and into attach subscriptions.

Two moments of the exit matter to callers and are kept apart: ``finished`` is set once the
exit is recorded and the output streams have ended (attach sessions see end-of-stream);
``exited`` once the monitor has also cleaned up and published ``die`` — ``stop``, ``kill -s KILL``
and ``rm -f`` wait for that one, so their own events come after ``die`` as with dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.containers.logconfig import extra_attributes, parse_log_config
from engine.containers.logs import JsonFileLogger
from engine.containers.model import Container
from engine.containers.streams import OutputBroadcaster
from runtime.types import Task

# A process that daemonised a grandchild may leave it holding the output pipes after the init
# died; dockerd waits for the streams too, but bounded.
DRAIN_TIMEOUT = 2.0


@dataclass
class LiveContainer:
    task: Task
    output: OutputBroadcaster
    logger: JsonFileLogger | None
    pumps: list[asyncio.Task[None]]
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    monitor: asyncio.Task[Any] | None = None
    # dockerd's RestartManager.Cancel ("ExitOnNext"): a kill or stop ends this run for good.
    exit_on_next: bool = False
    # dockerd's HasBeenManuallyRestarted: `docker restart` must not trigger the --rm removal.
    manual_restart: bool = False

    @classmethod
    def open(cls, c: Container, task: Task) -> LiveContainer:
        """Start pumping the task's output; raises errdefs.Internal for a bad log configuration."""
        output = OutputBroadcaster()
        log_config = c.host_config.get("LogConfig") or {}
        options = parse_log_config(str(log_config.get("Type") or ""), log_config.get("Config") or {})
        logger: JsonFileLogger | None = None
        if options.readable:
            attrs = extra_attributes(options.config, c.labels, list(c.config.get("Env") or []))
            logger = JsonFileLogger.from_options(Path(c.log_path), options, attrs or None)
            output.add_sink(logger)
        pumps = [
            asyncio.ensure_future(output.pump("stdout", task.stdio.stdout)),
            asyncio.ensure_future(output.pump("stderr", task.stdio.stderr)),
        ]
        return cls(task=task, output=output, logger=logger, pumps=pumps)

    async def drain(self) -> None:
        """Wait until every output pipe has hit EOF (all writers, including execs, are gone)."""
        _, pending = await asyncio.wait(self.pumps, timeout=DRAIN_TIMEOUT)
        if pending:
            self.task.stdio.close()
            await asyncio.wait(pending, timeout=1.0)
            for p in pending:
                p.cancel()

    async def close(self, after: Callable[[], Awaitable[None] | None]) -> None:
        await self.output.close(after=after)
        self.finished.set()

    async def abort(self) -> None:
        """Undo for a start that failed after the task was created."""
        for p in self.pumps:
            p.cancel()
        with contextlib.suppress(Exception):
            self.task.stdio.close()
        await self.output.close()
        self.finished.set()
        self.exited.set()
