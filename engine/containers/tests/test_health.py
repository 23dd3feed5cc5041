"""Health checks without root: dockerd's rules on the record, the monitor with a fake probe runner,
and probes as real ExecService execs on the FakeRuntime."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import errdefs
from engine.containers import health as hm
from engine.containers.createconfig import merge_image_config
from engine.containers.health import (
    ExecProbes,
    HealthMonitor,
    LimitedBuffer,
    Settings,
    apply_result,
    go_duration,
    kill_process_tree,
    probe_command,
    result_entry,
    validate_healthcheck,
)
from engine.containers.model import Container, Health, format_time, now_rfc3339
from engine.tests.test_exec import Harness

MS = 1_000_000


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


# --- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (200 * MS, "200ms"),
        (1_500_000, "1.5ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-200 * MS, "-200ms"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize(
    ("config", "cmd"),
    [
        ({"Healthcheck": {"Test": ["CMD", "curl", "-f", "x"]}}, ["curl", "-f", "x"]),
        ({"Healthcheck": {"Test": ["CMD-SHELL", "echo a; exit 1"]}}, ["/bin/sh", "-c", "echo a; exit 1"]),
        ({"Healthcheck": {"Test": ["CMD-SHELL", "x"]}, "Shell": ["/bin/ash", "-e"]}, ["/bin/ash", "-e", "x"]),
        ({"Healthcheck": {"Test": ["NONE"]}}, None),
        ({"Healthcheck": {"Test": []}}, None),
        ({"Healthcheck": {"Test": ["CMD"]}}, None),
        ({"Healthcheck": {"Test": ["HTTP", "x"]}}, None),
        ({"Healthcheck": None}, None),
        ({"Healthcheck": ["CMD", "x"]}, None),  # not an object: no healthcheck at all
        ({}, None),
    ],
)
def test_probe_command(config: dict[str, Any], cmd: list[str] | None) -> None:
    assert probe_command(config) == cmd


@pytest.mark.parametrize(
    ("healthcheck", "error"),
    [
        ({"Interval": 500_000}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Interval": -1}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Timeout": 1}, "Timeout in Healthcheck cannot be less than 1ms"),
        ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
        ({"StartPeriod": 999_999}, "StartPeriod in Healthcheck cannot be less than 1ms"),
        ({"StartInterval": 5}, "StartInterval in Healthcheck cannot be less than 1ms"),
        # Interval before Retries, as dockerd checks them.
        ({"Retries": -1, "Interval": 5}, "Interval in Healthcheck cannot be less than 1ms"),
    ],
)
def test_validate_refuses_with_dockerd_texts(healthcheck: dict[str, Any], error: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        validate_healthcheck(healthcheck)
    assert exc.value.message == error


def test_validate_accepts_zero_and_the_floor() -> None:
    validate_healthcheck(None)
    validate_healthcheck({"Test": ["NONE"]})
    validate_healthcheck(["CMD", "x"])  # type: ignore[arg-type]
    validate_healthcheck({"Interval": MS, "Timeout": 0, "StartPeriod": MS, "StartInterval": MS, "Retries": 0})


@pytest.mark.parametrize(
    ("mine", "image", "merged"),
    [
        # dockerd's merge (daemon/commit.go): unset fields of the container's come from the image.
        ({"Test": ["NONE"]}, {"Test": ["CMD", "x"], "Interval": 5, "Retries": 2},
         {"Test": ["NONE"], "Interval": 5, "Retries": 2}),
        ({"Test": ["CMD", "y"], "Timeout": 7}, {"Test": ["CMD", "x"], "Timeout": 1, "Retries": 2},
         {"Test": ["CMD", "y"], "Timeout": 7, "Retries": 2}),
        (None, {"Test": ["CMD", "x"], "StartInterval": 3}, {"Test": ["CMD", "x"], "StartInterval": 3}),
        # HealthConfig's fields only, each omitempty.
        ({"Test": ["CMD", "y"], "Interval": 0, "Retries": 0, "Bogus": 1}, None, {"Test": ["CMD", "y"]}),
    ],
)  # fmt: skip
def test_merge_with_the_image_healthcheck(
    mine: dict[str, Any] | None, image: dict[str, Any] | None, merged: dict[str, Any]
) -> None:
    config: dict[str, Any] = {"Image": "busybox"}
    if mine is not None:
        config["Healthcheck"] = mine
    image_config: dict[str, Any] = {} if image is None else {"Healthcheck": image}
    assert merge_image_config(config, image_config)["Healthcheck"] == merged


def test_settings_defaults_and_intervals() -> None:
    s = Settings.of({"Healthcheck": {"Test": ["CMD", "true"]}})
    assert s == Settings(30_000 * MS, 30_000 * MS, 0, 5_000 * MS, 3)
    s = Settings.of({"Healthcheck": {"Interval": 7, "StartPeriod": 100, "StartInterval": 3, "Retries": -2}})
    assert s.retries == 3
    assert s.next_delay(0, "starting") == 3  # inside the start period, still starting
    assert s.next_delay(0, "healthy") == 7
    assert s.next_delay(100, "starting") == 7  # the period is over


def test_limited_buffer_keeps_4096_bytes_and_marks_the_cut() -> None:
    buf = LimitedBuffer()
    buf.write(b"a" * 4000)
    buf.write(b"b" * 200)
    buf.write(b"c")
    assert buf.text() == "a" * 4000 + "b" * 96 + "..."
    small = LimitedBuffer()
    small.write(b"ok\n")
    assert small.text() == "ok\n"
    broken = LimitedBuffer()
    broken.write(b"\xff")
    assert broken.text() == "\ufffd"


def _entry(started: datetime, after: float, code: int) -> dict[str, Any]:
    t = started + timedelta(seconds=after)
    return result_entry(t, t, code, "")


def test_apply_result_streak_retries_and_log_cap() -> None:
    started = datetime.now(UTC)
    s = Settings.of({"Healthcheck": {"Retries": 2}})
    h = Health()
    apply_result(h, _entry(started, 1, 1), s, format_time(started))
    assert (h.status, h.failing_streak) == ("starting", 1)
    apply_result(h, _entry(started, 2, 7), s, format_time(started))  # any non-zero code fails
    assert (h.status, h.failing_streak) == ("unhealthy", 2)
    apply_result(h, _entry(started, 3, 0), s, format_time(started))
    assert (h.status, h.failing_streak) == ("healthy", 0)
    for i in range(4, 10):
        apply_result(h, _entry(started, i, 1 if i % 2 else 0), s, format_time(started))
    assert len(h.log) == 5
    assert [e["ExitCode"] for e in h.log] == [1, 0, 1, 0, 1]
    assert h.log[-1]["Start"] == format_time(started + timedelta(seconds=9))
    assert list(h.log[0]) == ["Start", "End", "ExitCode", "Output"]


def test_apply_result_start_period() -> None:
    started = datetime.now(UTC)
    s = Settings.of({"Healthcheck": {"Retries": 1, "StartPeriod": 10_000 * MS}})
    h = Health()
    apply_result(h, _entry(started, 1, 1), s, format_time(started))
    assert (h.status, h.failing_streak, len(h.log)) == ("starting", 0, 1)  # logged, not counted
    apply_result(h, _entry(started, 11, 1), s, format_time(started))
    assert (h.status, h.failing_streak) == ("unhealthy", 1)  # after the period it counts
    h = Health()
    apply_result(h, _entry(started, 1, 0), s, format_time(started))
    apply_result(h, _entry(started, 2, 1), s, format_time(started))
    # Once healthy, the start period no longer shields failures.
    assert (h.status, h.failing_streak) == ("unhealthy", 1)


# --- the monitor with a fake probe runner --------------------------------------------------------


class FakeRun:
    def __init__(
        self, code: int | None, output: bytes, duration: float, write: Callable[[bytes], None]
    ) -> None:
        self.killed = False
        self.finished = asyncio.Event()
        self.code = code
        self._task = asyncio.ensure_future(self._go(output, duration, write))

    async def _go(self, output: bytes, duration: float, write: Callable[[bytes], None]) -> None:
        write(output)
        await asyncio.sleep(duration)
        self.finished.set()

    async def wait(self) -> int | None:
        await self.finished.wait()
        return 137 if self.killed else self.code

    async def kill(self) -> None:
        if not self.finished.is_set():
            self.killed = True
            self._task.cancel()
            self.finished.set()


class FakeProbes:
    """Answers from a script: (exit code, output, duration) per probe, the last one repeating."""

    def __init__(self, script: list[tuple[int | None, bytes, float]], fail: str | None = None) -> None:
        self.script = script
        self.fail = fail
        self.runs: list[FakeRun] = []
        self.cmds: list[list[str]] = []

    async def start(self, c: Container, cmd: list[str], write: Callable[[bytes], None]) -> FakeRun:
        self.cmds.append(cmd)
        if self.fail is not None:
            raise errdefs.Conflict(self.fail)
        code, output, duration = self.script[min(len(self.runs), len(self.script) - 1)]
        probe = FakeRun(code, output, duration, write)
        self.runs.append(probe)
        return probe


class World:
    def __init__(self, probes: FakeProbes) -> None:
        self.probes = probes
        self.events: list[tuple[str, str]] = []
        self.saved = 0
        self.monitor = HealthMonitor(probes, publish=self.publish, save=self.save)

    def publish(self, c: Container, action: str) -> None:
        self.events.append((c.id, action))

    def save(self, c: Container) -> None:
        self.saved += 1

    def actions(self) -> list[str]:
        return [a for _, a in self.events]


def container(healthcheck: dict[str, Any] | None, cid: str = "c" * 64) -> Container:
    config: dict[str, Any] = {"Image": "busybox"}
    if healthcheck is not None:
        config["Healthcheck"] = healthcheck
    return Container(
        id=cid, name="/c", created=now_rfc3339(), image_id="sha256:" + "0" * 64,
        path="sleep", args=["1000"], config=config, host_config={},
    )  # fmt: skip


def start(w: World, c: Container) -> None:
    c.state.set_running(4242)
    w.monitor.update(c)


def stop(w: World, c: Container) -> None:
    c.state.set_stopped(137)
    w.monitor.update(c)


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.005)


FAST = {"Test": ["CMD-SHELL", "probe"], "Interval": 10 * MS}


def test_no_healthcheck_no_monitor_no_health() -> None:
    async def main() -> None:
        for hc in (None, {"Test": ["NONE"]}, {"Test": []}):
            w = World(FakeProbes([(0, b"", 0)]))
            c = container(hc)
            start(w, c)
            assert c.state.health is None and not w.monitor.watching(c.id)

    run(main())


def test_healthy_then_unhealthy_publishes_each_change_once_and_saves_it() -> None:
    async def main() -> None:
        probes = FakeProbes([(0, b"ok\n", 0), (0, b"ok\n", 0), (1, b"bad\n", 0)])
        w = World(probes)
        c = container({**FAST, "Retries": 2})
        start(w, c)
        assert c.state.health is not None and c.state.health.status == "starting"
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        stop(w, c)
        assert probes.cmds[0] == ["/bin/sh", "-c", "probe"]
        assert w.actions() == ["health_status: healthy", "health_status: unhealthy"]
        assert w.saved == 2
        h = c.state.health
        assert h is not None and h.failing_streak >= 2
        assert [e["Output"] for e in h.log[:3]] == ["ok\n", "ok\n", "bad\n"]

    run(main())


def test_stop_cancels_the_monitor_kills_the_probe_and_reads_unhealthy() -> None:
    async def main() -> None:
        probes = FakeProbes([(0, b"", 0), (0, b"", 60.0)])
        w = World(probes)
        c = container(FAST)
        start(w, c)
        await until(lambda: len(probes.runs) == 2)  # the second probe hangs
        stop(w, c)
        assert not w.monitor.watching(c.id)
        await until(lambda: probes.runs[1].killed)
        h = c.state.health
        assert h is not None and h.status == "unhealthy" and len(h.log) == 1
        await asyncio.sleep(0.05)
        assert len(probes.runs) == 2 and len(h.log) == 1  # nothing probes a stopped container
        assert w.actions() == ["health_status: healthy"]  # the stop itself publishes nothing

    run(main())


def test_a_monitor_whose_cancellation_was_lost_still_ends() -> None:
    """Python 3.11's wait_for returns a result and drops the cancellation when both arrive at
    once; here the cancellation is dropped outright. The monitor must end by itself."""

    async def main() -> None:
        probes = FakeProbes([(0, b"", 0)])
        w = World(probes)
        c = container(FAST)
        start(w, c)
        await until(lambda: len(probes.runs) >= 1)
        task = w.monitor._watches[c.id].task
        task.cancel = lambda *args, **kwargs: False  # type: ignore[method-assign]
        try:
            stop(w, c)
            await until(task.done, 1.0)  # it ends after the probe in flight, if any
        finally:
            del task.cancel  # the real one again, so a failure cannot hang the loop's shutdown
        runs = len(probes.runs)
        await asyncio.sleep(0.05)
        assert len(probes.runs) == runs  # nothing probes a stopped container

    run(main())


def test_a_new_run_resets_to_starting_and_keeps_the_log() -> None:
    async def main() -> None:
        w = World(FakeProbes([(1, b"", 0)]))
        c = container({**FAST, "Retries": 1})
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        stop(w, c)
        h = c.state.health
        assert h is not None
        kept = list(h.log)
        await asyncio.sleep(0.001)  # a new StartedAt
        start(w, c)
        assert (h.status, h.failing_streak) == ("starting", 0) and h.log == kept
        assert w.monitor.watching(c.id)
        # An auto-restart (restarting, then running) is a new run as well.
        await until(lambda: h.status == "unhealthy")
        c.state.set_restarting(1)
        w.monitor.update(c)
        assert not w.monitor.watching(c.id) and h.status == "unhealthy"
        await asyncio.sleep(0.001)
        start(w, c)
        assert h.status == "starting" and w.monitor.watching(c.id)
        await w.monitor.close()
        assert not w.monitor.watching(c.id)

    run(main())


def test_pause_stops_the_monitor_unpause_restarts_it_without_a_reset() -> None:
    async def main() -> None:
        probes = FakeProbes([(0, b"", 0)])
        w = World(probes)
        c = container(FAST)
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "healthy")
        c.state.paused, c.state.status = True, "paused"
        w.monitor.update(c)
        h = c.state.health
        assert h is not None and h.status == "unhealthy" and not w.monitor.watching(c.id)
        count = len(probes.runs)
        await asyncio.sleep(0.05)
        assert len(probes.runs) == count
        c.state.paused, c.state.status = False, "running"
        w.monitor.update(c)
        assert h.status == "unhealthy" and w.monitor.watching(c.id)
        await until(lambda: h.status == "healthy")
        assert w.actions() == ["health_status: healthy", "health_status: healthy"]
        await w.monitor.close()

    run(main())


def test_timeout_kills_the_probe_and_records_dockerds_text() -> None:
    async def main() -> None:
        probes = FakeProbes([(0, b"", 60.0)])
        w = World(probes)
        c = container({**FAST, "Timeout": 30 * MS, "Retries": 1})
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        assert probes.runs[0].killed
        h = c.state.health
        assert h is not None
        assert (h.log[0]["ExitCode"], h.log[0]["Output"]) == (-1, "Health check exceeded timeout (30ms)")
        await w.monitor.close()
        # With output, dockerd 28 appends it.
        probes = FakeProbes([(0, b"partial", 60.0)])
        w = World(probes)
        c = container({**FAST, "Timeout": 20 * MS, "Retries": 1}, cid="d" * 64)
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        assert c.state.health is not None
        assert c.state.health.log[0]["Output"] == "Health check exceeded timeout (20ms): partial"
        await w.monitor.close()

    run(main())


def test_a_probe_that_cannot_start_fails_with_its_error() -> None:
    async def main() -> None:
        w = World(FakeProbes([], fail="container x is not running"))
        c = container({**FAST, "Retries": 1})
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        assert c.state.health is not None
        assert c.state.health.log[0]["ExitCode"] == -1
        assert c.state.health.log[0]["Output"] == "container x is not running"
        await w.monitor.close()

    run(main())


def test_a_probe_without_exit_code_fails() -> None:
    async def main() -> None:
        w = World(FakeProbes([(None, b"", 0)]))
        c = container({**FAST, "Retries": 1})
        start(w, c)
        await until(lambda: c.state.health is not None and c.state.health.status == "unhealthy")
        assert c.state.health is not None
        assert c.state.health.log[0]["Output"] == f"healthcheck for container {c.id} has no exit code"
        await w.monitor.close()

    run(main())


def test_start_interval_while_starting() -> None:
    async def main() -> None:
        probes = FakeProbes([(1, b"", 0)])
        w = World(probes)
        hc = {"Test": ["CMD", "x"], "Interval": 3_600_000 * MS, "StartPeriod": 3_600_000 * MS}
        c = container({**hc, "StartInterval": 10 * MS})
        start(w, c)
        await until(lambda: len(probes.runs) >= 3)
        h = c.state.health
        assert h is not None and (h.status, h.failing_streak) == ("starting", 0)
        await w.monitor.close()

    run(main())


def test_update_never_raises() -> None:
    class Broken(World):
        def publish(self, c: Container, action: str) -> None:
            raise RuntimeError("boom")

    async def main() -> None:
        w = Broken(FakeProbes([(0, b"", 0)]))
        c = container(FAST)
        c.config["Healthcheck"] = {"Test": ["CMD", "x"], "Interval": "bad"}  # not an int: default
        start(w, c)
        assert w.monitor.watching(c.id)
        await w.monitor.close()

    run(main())


# --- probes as execs on the FakeRuntime ----------------------------------------------------------


def test_exec_probes_run_as_execs_with_dockerds_events(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        try:
            c = await h.container()
            c.config["Healthcheck"] = {"Test": ["CMD", "sh", "-c", "echo out; echo err >&2; exit 3"]}
            probes = ExecProbes(h.execs)
            out = LimitedBuffer()
            probe = await probes.start(c, ["sh", "-c", "echo out; echo err >&2; exit 3"], out.write)
            assert await probe.wait() == 3
            assert out.text() in ("out\nerr\n", "err\nout\n")
            actions = [a for a, _ in h.actions()]
            assert actions == [
                "exec_create: sh -c echo out; echo err >&2; exit 3",
                "exec_start: sh -c echo out; echo err >&2; exit 3",
                "exec_die",
            ]
            assert h.actions()[-1][1]["exitCode"] == "3"
            # A hanging probe is killed (the fake runtime has no real pids: no tree killer).
            slow = await probes.start(c, ["sleep", "60"], out.write)
            await slow.kill()
            assert await asyncio.wait_for(slow.wait(), 5) == 137
            await slow.kill()  # already gone: nothing to do
            # The monitor end to end on the exec path.
            w = HealthMonitor(probes, publish=h.containers.publish, save=lambda _: None)
            c.config["Healthcheck"] = {"Test": ["CMD", "true"], "Interval": 10 * MS}
            w.update(c)
            await until(lambda: c.state.health is not None and c.state.health.status == "healthy")
            assert ("health_status: healthy", c.id) in [(e.action, e.actor_id) for e in h.bus._ring]
            await w.close()
        finally:
            await h.runtime.close()
            await asyncio.gather(*h.containers._background, return_exceptions=True)

    run(main())


# --- killing a real process tree (no root needed: our own children) --------------------------------


def test_kill_process_tree_takes_the_children_along() -> None:
    async def main() -> None:
        proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait; true"])
        try:
            deadline = time.monotonic() + 5
            while len(hm._descendants(proc.pid)) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            children = hm._descendants(proc.pid)
            await kill_process_tree(proc.pid)
            assert proc.wait(5) == -signal.SIGKILL
            for pid in children:
                deadline = time.monotonic() + 5
                while hm._state(pid) not in ("", "Z", "X"):
                    assert time.monotonic() < deadline, f"{pid} survived"
                    await asyncio.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await kill_process_tree(proc.pid)  # reaped: a no-op, never a stranger

    run(main())


def test_kill_process_tree_of_a_gone_pid_is_a_no_op() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    run(kill_process_tree(proc.pid))  # must not raise
