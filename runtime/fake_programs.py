"""What a FakeRuntime "process" is: a coroutine with in-memory stdio, signals and a terminal size.

Engine tests write their own programs against `FakeContext`; the built-ins cover the usual
busybox commands used in Docker tests (echo, cat, sleep, true, false, a tiny `sh -c`).
"""

from __future__ import annotations

import asyncio
import re
import signal as _signal
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import NoReturn

from runtime.types import ConsoleSize, IOSpec

FakeProgram = Callable[["FakeContext"], Awaitable[int]]

# Signals whose default action is to do nothing (signal(7)); SIGSTOP/SIGTSTP/... are treated alike.
IGNORED_BY_DEFAULT = {
    int(s)
    for s in (
        _signal.SIGCHLD,
        _signal.SIGCONT,
        _signal.SIGURG,
        _signal.SIGWINCH,
        _signal.SIGSTOP,
        _signal.SIGTSTP,
    )
}


class FakeStream:
    """A bounded in-memory byte stream (one writer side, one reader); b"" once closed and drained."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._closed = False
        self._changed = asyncio.Event()

    async def write(self, data: bytes) -> None:
        while self._size >= self._limit and not self._closed:
            self._changed.clear()
            await self._changed.wait()
        if self._closed or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._changed.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._closed:
                return b""
            self._changed.clear()
            await self._changed.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        self._changed.set()
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def close(self) -> None:
        self._closed = True
        self._changed.set()


class FakeStdio:
    def __init__(self, io: IOSpec) -> None:
        self._tty = io.tty
        self._stdin_enabled = io.stdin
        self.stdin = FakeStream()
        self._stdout = FakeStream()
        self._stderr = FakeStream()
        if io.tty:
            self._stderr.close()
        if not io.stdin:
            self.stdin.close()  # /dev/null

    @property
    def tty(self) -> bool:
        return self._tty

    @property
    def stdout(self) -> FakeStream:
        return self._stdout

    @property
    def stderr(self) -> FakeStream:
        return self._stderr

    async def write_stdin(self, data: bytes) -> None:
        await self.stdin.write(data)

    async def close_stdin(self) -> None:
        self.stdin.close()

    def close(self) -> None:
        for stream in (self.stdin, self._stdout, self._stderr):
            stream.close()


class FakeOOMKilled(Exception):
    pass


class FakeContext:
    """What a fake program sees: argv, env, stdio, signals, the terminal size."""

    def __init__(self, args: list[str], env: list[str], stdio: FakeStdio, size: ConsoleSize | None) -> None:
        self.args = args
        self.env = env
        self.stdio = stdio
        self.signals: asyncio.Queue[int] = asyncio.Queue()
        self.trapped: set[int] = set()
        self.terminal_size = size
        self.running = asyncio.Event()  # cleared while paused
        self.running.set()

    def trap(self, *sigs: int) -> None:
        """Deliver these signals to `signals` instead of applying their default action."""
        self.trapped.update(int(s) for s in sigs)

    async def write(self, data: bytes, stream: str = "stdout") -> None:
        await self.running.wait()
        target = self.stdio.stderr if stream == "stderr" and not self.stdio.tty else self.stdio.stdout
        await target.write(data)

    async def read_stdin(self) -> bytes:
        return await self.stdio.stdin.read()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.running.wait()

    def oom(self) -> NoReturn:
        raise FakeOOMKilled()


async def _echo(ctx: FakeContext) -> int:
    await ctx.write((" ".join(ctx.args[1:]) + "\n").encode())
    return 0


async def _cat(ctx: FakeContext) -> int:
    while chunk := await ctx.read_stdin():
        await ctx.write(chunk)
    return 0


async def _sleep(ctx: FakeContext) -> int:
    await ctx.sleep(float(ctx.args[1]) if len(ctx.args) > 1 else 0)
    return 0


async def _true(ctx: FakeContext) -> int:
    return 0


async def _false(ctx: FakeContext) -> int:
    return 1


async def _sh(ctx: FakeContext) -> int:
    """Just enough `sh -c` for tests: "echo X", "echo X >&2", "sleep N" and "exit N" joined by ";"."""
    script = ctx.args[2] if len(ctx.args) > 2 and ctx.args[1] == "-c" else ""
    for command in filter(None, (c.strip() for c in script.split(";"))):
        if m := re.fullmatch(r"exit (\d+)", command):
            return int(m.group(1))
        if m := re.fullmatch(r"echo (.*?)( >&2)?", command):
            await ctx.write((m.group(1) + "\n").encode(), "stderr" if m.group(2) else "stdout")
        elif m := re.fullmatch(r"sleep ([\d.]+)", command):
            await ctx.sleep(float(m.group(1)))
    return 0


BUILTIN_PROGRAMS: Mapping[str, FakeProgram] = {
    "echo": _echo,
    "cat": _cat,
    "sleep": _sleep,
    "true": _true,
    "false": _false,
    "sh": _sh,
}
