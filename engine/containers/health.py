"""Health checks as dockerd runs them (daemon/health.go, container/health.go).

A container whose ``Config.Healthcheck.Test`` is ``["CMD", ...]`` or ``["CMD-SHELL", "..."]``
gets one monitor task per run: it sleeps an interval, runs the probe as an exec (so the
``exec_create`` / ``exec_start`` / ``exec_die`` events and the exec records are dockerd's),
and folds the result into ``State.Health``:

- exit 0 is healthy and resets the failing streak; anything else (including a probe that could
  not start, or ran past its timeout: exit code -1) is a failure. Failures while the container
  is still ``starting`` and inside its start period do not count;
- ``Retries`` failures in a row make it unhealthy; every change of status publishes
  ``health_status: <status>`` and is written to ``config.v2.json`` (dockerd commits probe
  results to memory only; a transition is rare enough to persist);
- the last five results are kept, each output capped at 4096 bytes (``...`` marks a cut);
- a probe running past its timeout is killed with every process it started, then waited for,
  so dying probes never pile up or leak into the container.

``update`` follows the container's state, as dockerd's initHealthMonitor/updateHealthMonitor
do: a new run resets the status to ``starting`` (the log stays); pause, exit and restart stop
the monitor and, for compatibility with dockerd, leave the status ``unhealthy``; unpause starts
it again without a reset. Intervals follow dockerd 28: ``StartInterval`` while starting inside
the start period, ``Interval`` otherwise, counted from the end of the previous probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine import errdefs
from engine.containers.model import Container, Health, format_time, parse_time

if TYPE_CHECKING:
    from engine.containers.exec import ExecService

log = logging.getLogger("skiff.health")

SECOND = 1_000_000_000
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
# containertypes.MinimumDuration: the floor of every duration a client may set.
MINIMUM_DURATION = 1_000_000
MAX_OUTPUT = 4096
MAX_LOG_ENTRIES = 5
# Starting an exec may be slow; that time is not the probe's and has a bound of its own.
EXEC_START_TIMEOUT = 30.0
# How long to wait for a stopped process to show as stopped before reading its children.
_STOP_SETTLE = 0.2

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


# --- configuration -------------------------------------------------------------------------------


def validate_healthcheck(healthcheck: Mapping[str, Any] | None) -> None:
    """dockerd's validateHealthCheck, with its texts (create refuses before anything is made)."""
    if not isinstance(healthcheck, Mapping):
        return
    for key in ("Interval", "Timeout"):
        if _int(healthcheck.get(key)) and _int(healthcheck.get(key)) < MINIMUM_DURATION:
            raise errdefs.InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    if _int(healthcheck.get("Retries")) < 0:
        raise errdefs.InvalidParameter("Retries in Healthcheck cannot be negative")
    for key in ("StartPeriod", "StartInterval"):
        if _int(healthcheck.get(key)) and _int(healthcheck.get(key)) < MINIMUM_DURATION:
            raise errdefs.InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")


def probe_command(config: Mapping[str, Any]) -> list[str] | None:
    """dockerd's getProbe: the argv to exec, or None without a usable healthcheck (NONE, unknown type)."""
    healthcheck = config.get("Healthcheck")
    test = [str(t) for t in healthcheck.get("Test") or []] if isinstance(healthcheck, Mapping) else []
    if not test:
        return None
    if test[0] == "CMD":
        cmd = test[1:]
    elif test[0] == "CMD-SHELL":
        shell = [str(s) for s in config.get("Shell") or []] or ["/bin/sh", "-c"]
        cmd = shell + test[1:]
    else:
        if test[0] != "NONE":
            log.warning("Unknown healthcheck type '%s' (expected 'CMD')", test[0])
        return None
    return cmd or None


@dataclass(frozen=True)
class Settings:
    """A healthcheck's timings in nanoseconds, zero values replaced by dockerd's defaults."""

    interval: int
    timeout: int
    start_period: int
    start_interval: int
    retries: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Settings:
        found = config.get("Healthcheck")
        hc: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        retries = _int(hc.get("Retries"))
        return cls(
            interval=_int(hc.get("Interval")) or DEFAULT_INTERVAL,
            timeout=_int(hc.get("Timeout")) or DEFAULT_TIMEOUT,
            start_period=_int(hc.get("StartPeriod")) or DEFAULT_START_PERIOD,
            start_interval=_int(hc.get("StartInterval")) or DEFAULT_START_INTERVAL,
            retries=retries if retries > 0 else DEFAULT_RETRIES,
        )

    def next_delay(self, since_start_ns: int, status: str) -> int:
        """dockerd's getInterval: quicker probes while starting inside the start period."""
        if since_start_ns >= self.start_period:
            return self.interval
        return self.start_interval if status == STARTING else self.interval


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def go_duration(ns: int) -> str:
    """Go's time.Duration.String (``200ms``, ``1.5s``, ``1m30s``), as dockerd prints a timeout."""
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)
    if u < SECOND:
        unit, prec = ("ns", 0) if u < 1_000 else ("µs", 3) if u < 1_000_000 else ("ms", 6)
        return sign + _with_fraction(u, prec) + unit
    seconds, minutes = u % (60 * SECOND), u // (60 * SECOND)
    text = _with_fraction(seconds, 9) + "s"
    if minutes:
        text = f"{minutes % 60}m" + text
        if minutes >= 60:
            text = f"{minutes // 60}h" + text
    return sign + text


def _with_fraction(value: int, prec: int) -> str:
    whole, frac = divmod(value, 10**prec)
    digits = f"{frac:0{prec}d}".rstrip("0") if prec else ""
    return f"{whole}.{digits}" if digits else str(whole)


# --- results -------------------------------------------------------------------------------------


class LimitedBuffer:
    """dockerd's limitedBuffer: the first 4096 bytes of stdout and stderr together, ``...`` if cut."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self._limit = limit
        self._data = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        keep = max(0, min(self._limit - len(self._data), len(data)))
        self._data += data[:keep]
        if keep < len(data):
            self.truncated = True

    def text(self) -> str:
        # Go's JSON encoder turns invalid UTF-8 into U+FFFD; a cut may split a character.
        out = self._data.decode("utf-8", errors="replace")
        return out + "..." if self.truncated else out


def result_entry(start: datetime, end: datetime, exit_code: int, output: str) -> dict[str, Any]:
    """One ``State.Health.Log`` entry, keys in dockerd's order."""
    return {"Start": format_time(start), "End": format_time(end), "ExitCode": exit_code, "Output": output}


def apply_result(health: Health, result: dict[str, Any], settings: Settings, started_at: str) -> None:
    """dockerd's handleProbeResult on the record (the caller publishes a change of status)."""
    health.log = [*health.log, result][-MAX_LOG_ENTRIES:]
    if result["ExitCode"] == 0:
        health.failing_streak = 0
        health.status = HEALTHY
        return
    if health.status == STARTING:
        started, probed = parse_time(started_at), parse_time(str(result["Start"]))
        period = timedelta(microseconds=settings.start_period / 1000)
        if started is not None and probed is not None and probed - started < period:
            return  # still inside the start period: a failure does not count yet
    health.failing_streak += 1
    if health.failing_streak >= settings.retries:
        health.status = UNHEALTHY


# --- running probes ------------------------------------------------------------------------------


class ProbeRun(Protocol):
    """A started probe process."""

    async def wait(self) -> int | None:
        """Its exit code once it has exited and its output is drained (None if never known)."""
        ...

    async def kill(self) -> None:
        """Kill it and everything it started; no-op once it has exited."""
        ...


class ProbeExecutor(Protocol):
    async def start(self, c: Container, cmd: list[str], write: Callable[[bytes], None]) -> ProbeRun:
        """Start ``cmd`` in the running container with stdout and stderr sent to ``write``.

        Raises errdefs.EngineError when it cannot start (dockerd records its text, exit -1).
        """
        ...


class _ExecProbe:
    def __init__(self, run: Any, kill_tree: Callable[[int], Awaitable[None]] | None) -> None:
        self._run = run  # engine.containers.exec._ExecRun
        self._kill_tree = kill_tree

    async def wait(self) -> int | None:
        await self._run.done.wait()
        code: int | None = self._run.record.exit_code
        return code

    async def kill(self) -> None:
        if self._run.record.exit_code is not None:
            return
        if self._kill_tree is not None:
            await self._kill_tree(self._run.process.pid)
            return
        with contextlib.suppress(errdefs.EngineError, OSError):
            await self._run.process.kill(signal.SIGKILL)


class ExecProbes:
    """Probes as dockerd runs them: one exec each, with the container's user and working dir."""

    def __init__(self, execs: ExecService, kill_tree: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._execs = execs
        # Without a tree killer (fake runtimes, whose pids are not real) only the probe is killed.
        self._kill_tree = kill_tree

    async def start(self, c: Container, cmd: list[str], write: Callable[[bytes], None]) -> ProbeRun:
        record = await self._execs.create(c.id, {"Cmd": cmd, "AttachStdout": True, "AttachStderr": True})

        async def sink(_stream: str, data: bytes) -> None:
            write(data)

        run = await self._execs.start_captured(record.id, sink)
        return _ExecProbe(run, self._kill_tree)


async def kill_process_tree(pid: int) -> None:
    """SIGKILL a probe process (our child, not yet reaped) and all its descendants.

    Called only while the exec has no recorded exit (the reaper runs on this same loop, so the
    pid is not yet free for reuse); from then on a pidfd pins it. The tree is stopped first, then
    killed, so nothing forks away in between: a shell's children die with it, where dockerd
    kills the probe's own process only and leaves them running in the container.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await asyncio.to_thread(_kill_tree_sync, pidfd, pid)
    finally:
        os.close(pidfd)


def _kill_tree_sync(pidfd: int, pid: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)
    except ProcessLookupError:
        return
    tree = {pid}
    fresh = {pid}
    while fresh:
        _settle(fresh)
        fresh = _descendants(pid) - tree
        for p in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGSTOP)
        tree |= fresh
    for p in tree - {pid}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _settle(pids: set[int]) -> None:
    """Wait (briefly) until each process is stopped or gone: a stopped process cannot fork."""
    deadline = time.monotonic() + _STOP_SETTLE
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        waiting = {p for p in waiting if _state(p) not in ("T", "t", "Z", "X", "")}
        if waiting:
            time.sleep(0.001)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split(" ")
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


# --- the monitor ---------------------------------------------------------------------------------


@dataclass
class _Watch:
    generation: str  # the run's StartedAt
    task: asyncio.Task[None]


class HealthMonitor:
    """One monitor task per running container with a healthcheck; ``update`` after state changes."""

    def __init__(
        self,
        probes: ProbeExecutor,
        *,
        publish: Callable[[Container, str], None],
        save: Callable[[Container], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]] | None = None,
    ) -> None:
        self._probes = probes
        self._publish = publish
        self._save = save
        self._spawn = spawn or asyncio.ensure_future
        self._watches: dict[str, _Watch] = {}
        # The run each container's health was last reset for: an unpause keeps the status.
        self._initialised: dict[str, str] = {}

    def update(self, c: Container) -> None:
        """Start, reset or stop the monitor for ``c``'s current state; never raises."""
        try:
            self._update(c)
        except Exception:  # a health-check fault must not break a start or an exit
            log.exception("health monitor of %s", c.short_id)

    def _update(self, c: Container) -> None:
        if probe_command(c.config) is None:
            return
        watch = self._watches.get(c.id)
        generation = c.state.started_at
        if c.state.status != "running":  # exited, restarting, paused, removing
            if watch is not None:
                self._stop(c, watch)
            if not c.state.paused:
                self._initialised.pop(c.id, None)
            return
        if self._initialised.get(c.id) != generation:
            if watch is not None:
                self._stop(c, watch)
                watch = None
            health = c.state.health or Health()
            health.status, health.failing_streak = STARTING, 0
            c.state.health = health
            self._initialised[c.id] = generation
        if watch is None:
            task = self._spawn(self._watch(c, generation))
            self._watches[c.id] = _Watch(generation, task)
            task.add_done_callback(functools.partial(self._forget, c.id))

    def _stop(self, c: Container, watch: _Watch) -> None:
        # Cancelling kills a probe in flight; its result can no longer be recorded.
        watch.task.cancel()
        self._watches.pop(c.id, None)
        if c.state.health is not None:
            c.state.health.status = UNHEALTHY  # dockerd's CloseMonitorChannel, no event

    def _forget(self, cid: str, task: asyncio.Task[None]) -> None:
        watch = self._watches.get(cid)
        if watch is not None and watch.task is task:
            del self._watches[cid]
        if not task.cancelled() and task.exception() is not None:
            log.error("health monitor of %s failed: %r", cid[:12], task.exception())

    def watching(self, cid: str) -> bool:
        return cid in self._watches

    async def close(self) -> None:
        """Daemon shutdown: stop every monitor and wait for their probes to be killed."""
        tasks = [w.task for w in self._watches.values()]
        self._watches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, c: Container, generation: str) -> None:
        cmd = probe_command(c.config)
        assert cmd is not None
        settings = Settings.of(c.config)
        started = parse_time(generation) or datetime.now(UTC)
        me = asyncio.current_task()
        while True:
            health = c.state.health
            status = health.status if health is not None else STARTING
            since = int((datetime.now(UTC) - started).total_seconds() * SECOND)
            await asyncio.sleep(settings.next_delay(since, status) / SECOND)
            result = await self._probe(c, cmd, settings.timeout)
            health = c.state.health
            # Python 3.11's wait_for can swallow the cancellation ``_stop`` sent when the probe's
            # start finished at that moment: a monitor no longer registered ends on its own.
            watch = self._watches.get(c.id)
            if watch is None or watch.task is not me:
                return
            if health is None or c.state.started_at != generation:
                return
            before = health.status
            apply_result(health, result, settings, generation)
            if health.status != before:
                self._publish(c, f"health_status: {health.status}")
                with contextlib.suppress(OSError):
                    self._save(c)

    async def _probe(self, c: Container, cmd: list[str], timeout_ns: int) -> dict[str, Any]:
        start = datetime.now(UTC)
        output = LimitedBuffer()
        try:
            run = await asyncio.wait_for(self._probes.start(c, cmd, output.write), EXEC_START_TIMEOUT)
        except TimeoutError:
            message = f"timed out starting health check for container {c.id}"
            return result_entry(start, datetime.now(UTC), -1, message)
        except errdefs.EngineError as err:
            log.warning("Health check for container %s error: %s", c.id, err.message)
            return result_entry(start, datetime.now(UTC), -1, err.message)
        waiting = asyncio.ensure_future(run.wait())
        try:
            code = await asyncio.wait_for(asyncio.shield(waiting), timeout_ns / SECOND)
        except TimeoutError:
            # Wait for the killed probe too: dying probes must not pile up.
            await run.kill()
            await waiting
            text = output.text()
            message = f"Health check exceeded timeout ({go_duration(timeout_ns)})"
            return result_entry(start, datetime.now(UTC), -1, f"{message}: {text}" if text else message)
        except asyncio.CancelledError:
            await run.kill()  # the monitor stopped (container stop, pause): the probe goes with it
            waiting.cancel()
            raise
        if code is None:
            message = f"healthcheck for container {c.id} has no exit code"
            return result_entry(start, datetime.now(UTC), -1, message)
        return result_entry(start, datetime.now(UTC), code, output.text())
