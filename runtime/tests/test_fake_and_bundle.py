"""FakeRuntime behaves like the real one where the engine can tell; Bundle layout."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine import errdefs
from runtime.bundle import Bundle
from runtime.fake import FakeContext, FakeRuntime
from runtime.types import ConsoleSize, IOSpec, StartError

pytestmark = pytest.mark.timeout(30)
T = TypeVar("T")


def spec(args: list[str], terminal: bool = False) -> dict[str, Any]:
    return {"ociVersion": "1.0.2", "process": {"args": args, "env": ["A=1"], "terminal": terminal}}


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        return await asyncio.wait_for(main(), 20)

    return asyncio.run(wrapped())


async def drain(stream: Any) -> bytes:
    return b"".join([c async for c in stream])


def test_bundle_layout(tmp_path: Path) -> None:
    bundle = Bundle.create(tmp_path / "bundles", "abc", spec(["echo", "hi"]))
    assert bundle.path == tmp_path / "bundles" / "abc"
    assert bundle.rootfs.is_dir()
    assert json.loads(bundle.config_path.read_text())["process"]["args"] == ["echo", "hi"]
    assert bundle.read_config() == spec(["echo", "hi"])
    assert bundle.exec_pid_file("e1").parent == bundle.path
    bundle.init_pid_file.write_text("123")
    assert bundle.read_pid(bundle.init_pid_file) == 123
    assert not list(bundle.path.glob(".config.json.*"))  # no temp file left by the atomic write
    assert bundle.remove() is True
    assert not bundle.path.exists()
    assert bundle.remove() is True  # idempotent
    prepared = Bundle.prepare(tmp_path / "bundles", "def")
    assert prepared.rootfs.is_dir() and not prepared.config_path.exists()
    assert prepared.path.stat().st_mode & 0o777 == 0o711
    with pytest.raises(errdefs.NotFound):
        Bundle(tmp_path / "nothing").read_config()
    for bad in ("", "../x", "a/b", ".."):
        with pytest.raises(errdefs.InvalidParameter):
            Bundle.create(tmp_path, bad, {})


def test_fake_echo_and_exit_codes(tmp_path: Path) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        b = Bundle.create(tmp_path, "c1", spec(["sh", "-c", "echo hi; echo err >&2; exit 3"]))
        task = await rt.create("c1", b.path, IOSpec())
        assert await rt.list_ids() == ["c1"]
        out = asyncio.ensure_future(drain(task.stdio.stdout))
        err = asyncio.ensure_future(drain(task.stdio.stderr))
        await task.start()
        status = await task.wait()
        assert (await out, await err, status.code, status.signal) == (b"hi\n", b"err\n", 3, None)
        assert task.exit_status == status
        await task.delete()
        assert await rt.list_ids() == []
        assert [c[0] for c in rt.calls] == ["create", "start", "delete"]

    run(main)


def test_fake_stdin_signals_and_tty(tmp_path: Path) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        b = Bundle.create(tmp_path, "c2", spec(["cat"], terminal=True))
        task = await rt.create("c2", b.path, IOSpec(tty=True, stdin=True, console_size=ConsoleSize(24, 80)))
        assert task.context.terminal_size == ConsoleSize(24, 80)
        await task.start()
        await task.stdio.write_stdin(b"abc")
        assert await task.stdio.stdout.read() == b"abc"
        await task.resize(100, 30)
        assert task.context.terminal_size == ConsoleSize(height=30, width=100)
        await task.kill("WINCH")  # default action: ignore
        assert task.exit_status is None
        await task.kill("SIGTERM")
        status = await task.wait()
        assert (status.code, status.signal) == (143, signal.SIGTERM)
        with pytest.raises(errdefs.Conflict):
            await task.kill(9)
        await task.delete()

    run(main)


def test_fake_custom_program_traps_and_oom(tmp_path: Path) -> None:
    async def graceful(ctx: FakeContext) -> int:
        ctx.trap(signal.SIGTERM)
        await ctx.write(b"ready\n")
        await ctx.signals.get()
        return 0

    async def hog(ctx: FakeContext) -> int:
        ctx.oom()

    async def main() -> None:
        rt = FakeRuntime({"graceful": graceful, "hog": hog})
        task = await rt.create("g", Bundle.create(tmp_path, "g", spec(["/usr/bin/graceful"])).path, IOSpec())
        await task.start()
        assert await task.stdio.stdout.read() == b"ready\n"
        await task.kill(signal.SIGTERM)
        assert (await task.wait()).code == 0
        task2 = await rt.create("h", Bundle.create(tmp_path, "h", spec(["hog"])).path, IOSpec())
        await task2.start()
        status = await task2.wait()
        assert (status.code, status.signal, status.oom_killed) == (137, 9, True)

    run(main)


def test_fake_missing_command_and_injected_failure(tmp_path: Path) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        b = Bundle.create(tmp_path, "n", spec(["nope"]))
        with pytest.raises(StartError) as caught:
            await rt.create("n", b.path, IOSpec())
        assert caught.value.exit_code == 127
        assert 'exec: "nope": executable file not found in $PATH: unknown' in caught.value.message
        rt.fail_next("start", errdefs.Internal("boom"))
        task = await rt.create("s", Bundle.create(tmp_path, "s", spec(["sleep", "10"])).path, IOSpec())
        with pytest.raises(errdefs.Internal):
            await task.start()
        await task.delete()  # never started: no force needed

    run(main)


def test_fake_exec_pause_and_delete_rules(tmp_path: Path) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        task = await rt.create("e", Bundle.create(tmp_path, "e", spec(["sleep", "60"])).path, IOSpec())
        await task.start()
        proc = await task.exec("x1", {"args": ["sh", "-c", "echo in; exit 4"]}, IOSpec())
        assert await drain(proc.stdio.stdout) == b"in\n"
        assert (await proc.wait()).code == 4
        with pytest.raises(StartError):
            await task.exec("x2", {"args": ["nope"]}, IOSpec())
        await task.pause()
        with pytest.raises(errdefs.Conflict):
            await task.pause()
        await task.resume()
        with pytest.raises(errdefs.Conflict):
            await task.delete()
        await task.delete(force=True)
        assert (await task.wait()).code == 137
        await rt.close()

    run(main)


def test_fake_state_follows_the_task(tmp_path: Path) -> None:
    async def main() -> None:
        rt = FakeRuntime()
        task = await rt.create("st", Bundle.create(tmp_path, "st", spec(["sleep", "60"])).path, IOSpec())
        assert (await rt.state("st"))["status"] == "created"
        await task.start()
        state = await rt.state("st")
        assert state["status"] == "running" and state["pid"] == task.pid
        await task.pause()
        assert (await rt.state("st"))["status"] == "paused"
        await task.resume()
        await task.kill("KILL")
        await task.wait()
        assert (await rt.state("st"))["status"] == "stopped"
        await task.delete()
        with pytest.raises(errdefs.NotFound):
            await rt.state("st")
        await rt.close()

    run(main)
