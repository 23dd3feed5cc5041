"""The daemon's ends of a container process's stdio: pipes, or a terminal from a console socket.

Without a TTY the daemon makes the pipes and hands the child ends to `runc create` /
`runc exec --detach` as its own stdio; runc passes them on to the container process, which
keeps them after runc exits (containerd's shim does the same with pre-opened fifos). With a
TTY, runc creates the pty inside the container and sends the master over an AF_UNIX
"console socket" (SCM_RIGHTS); the daemon then owns the master.

Output is pumped by fd readers registered on the loop as soon as the Stdio exists, into a
bounded buffer per stream: a process writing more than a pipe's 64 KiB never deadlocks
against a consumer that has not started yet, and a consumer that falls far behind makes
the process block instead of growing the daemon's memory. Readers use `add_reader` on raw
fds rather than `connect_read_pipe`, so a pty master's EIO (the kernel's way of saying the
last slave fd closed) ends the stream like EOF, identically on asyncio and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import socket
import struct
import tempfile
import termios
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from engine import errdefs
from runtime.types import IOSpec

HIGH_WATER = 1 << 20
READ_CHUNK = 64 * 1024
# On a terminal, end of input cannot be signalled by closing anything: the line discipline
# turns VEOF (ctrl-D) at the start of a line into a zero-length read for the process.
VEOF = b"\x04"


class FdOutput:
    """An OutputStream over a non-blocking fd it owns (pipe read end or pty master)."""

    def __init__(self, fd: int, *, high_water: int = HIGH_WATER) -> None:
        self._on_eof: Callable[[], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._high_water = high_water
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._reading = False
        self._waiter: asyncio.Future[None] | None = None
        os.set_blocking(fd, False)
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self._fd >= 0:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO on a pty master after hang-up; anything else also leaves nothing to read.
            data = b""
        if not data:
            self.close()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= self._high_water:
            self._pause_reading()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            if self._waiter is not None:
                raise RuntimeError("output stream already has a reader")
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered < self._high_water // 2:
            self._resume_reading()
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    def call_at_eof(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once reading has stopped (EOF, hang-up or close())."""
        if self._eof:
            callback()
        else:
            self._on_eof = callback

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def close(self) -> None:
        """Stop reading; what is already buffered is still delivered, then EOF."""
        if self._fd >= 0:
            self._pause_reading()
            os.close(self._fd)
            self._fd = -1
        self._eof = True
        self._wake()
        if self._on_eof is not None:
            callback, self._on_eof = self._on_eof, None
            callback()


class EmptyOutput:
    """The stderr of a TTY process: there is none, the terminal merges it into stdout."""

    async def read(self) -> bytes:
        return b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        return
        yield

    def close(self) -> None:
        pass


class FdInput:
    """Writes to a process's stdin fd with backpressure: `write` returns once the kernel took it all."""

    def __init__(self, fd: int | None, *, tty: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = -1 if fd is None else fd
        self._tty = tty
        self._lock = asyncio.Lock()
        self._writable: asyncio.Future[None] | None = None
        if self._fd >= 0:
            os.set_blocking(self._fd, False)

    async def write(self, data: bytes) -> None:
        async with self._lock:
            view = memoryview(data)
            while view and self._fd >= 0:
                try:
                    written = os.write(self._fd, view)
                except (BlockingIOError, InterruptedError):
                    await self._wait_writable()
                    continue
                except OSError:
                    # EPIPE: the process closed stdin or exited; EIO: the terminal hung up.
                    self.close()
                    return
                view = view[written:]

    async def _wait_writable(self) -> None:
        fd = self._fd
        self._writable = self._loop.create_future()
        self._loop.add_writer(fd, self._wake)
        try:
            await self._writable
        finally:
            self._writable = None
            if fd == self._fd:
                self._loop.remove_writer(fd)

    def _wake(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def close_stdin(self) -> None:
        if self._tty:
            await self.write(VEOF)
            return
        async with self._lock:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            if self._writable is not None:
                self._loop.remove_writer(self._fd)
                self._wake()
            os.close(self._fd)
            self._fd = -1


class FdStdio:
    """Stdio over fds the daemon owns; built by `PipeIO.stdio()` or `terminal_stdio()`."""

    def __init__(
        self,
        *,
        tty: bool,
        stdout: FdOutput | EmptyOutput,
        stderr: FdOutput | EmptyOutput,
        stdin: FdInput,
        terminal_fd: int | None = None,
    ) -> None:
        self._tty = tty
        self._stdout = stdout
        self._stderr = stderr
        self._stdin = stdin
        self._terminal_fd = -1 if terminal_fd is None else terminal_fd
        self._closed = False

    @property
    def tty(self) -> bool:
        return self._tty

    @property
    def stdout(self) -> FdOutput | EmptyOutput:
        return self._stdout

    @property
    def stderr(self) -> FdOutput | EmptyOutput:
        return self._stderr

    async def write_stdin(self, data: bytes) -> None:
        await self._stdin.write(data)

    async def close_stdin(self) -> None:
        await self._stdin.close_stdin()

    def resize(self, width: int, height: int) -> None:
        if self._terminal_fd >= 0:
            set_winsize(self._terminal_fd, width, height)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._stdout.close()
        self._stderr.close()
        self._stdin.close()
        if self._terminal_fd >= 0:
            os.close(self._terminal_fd)
            self._terminal_fd = -1


class PipeIO:
    """The pipes of one non-TTY process: child ends for runc, parent ends for the daemon."""

    def __init__(self, io: IOSpec) -> None:
        self._parent: list[int] = []
        self._child: list[int] = []
        self._stdin_w: int | None = None
        try:
            if io.stdin:
                self.child_stdin, self._stdin_w = self._pipe(child_reads=True)
            else:
                # docker run without -i: the process reads /dev/null, never the daemon.
                self.child_stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                self._child.append(self.child_stdin)
                self._stdin_w = None
            self._stdout_r, self.child_stdout = self._pipe(child_reads=False)
            self._stderr_r, self.child_stderr = self._pipe(child_reads=False)
        except BaseException:
            self._close_all()
            raise

    def _pipe(self, *, child_reads: bool) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        self._parent.append(w if child_reads else r)
        self._child.append(r if child_reads else w)
        return r, w

    def close_child_ends(self) -> None:
        """Call once runc has exited: only the container may hold them, or EOF never comes."""
        for fd in self._child:
            os.close(fd)
        self._child.clear()

    def stdio(self) -> FdStdio:
        """Start pumping; the parent ends now belong to the returned Stdio."""
        stdio = FdStdio(
            tty=False,
            stdout=FdOutput(self._stdout_r),
            stderr=FdOutput(self._stderr_r),
            stdin=FdInput(self._stdin_w, tty=False),
        )
        self._parent.clear()
        return stdio

    def _close_all(self) -> None:
        self.close_child_ends()
        for fd in self._parent:
            os.close(fd)
        self._parent.clear()

    def close(self) -> None:
        """Undo on failure: closes whatever has not been handed over."""
        self._close_all()


def terminal_stdio(master: int, io: IOSpec) -> FdStdio:
    """Stdio over a pty master received from the console socket (owned by the result)."""
    reader = os.dup(master)
    writer = os.dup(master) if io.stdin else None
    if io.console_size is not None:
        set_winsize(master, io.console_size.width, io.console_size.height)
    stdout = FdOutput(reader)
    stdio = FdStdio(
        tty=True, stdout=stdout, stderr=EmptyOutput(), stdin=FdInput(writer, tty=True), terminal_fd=master
    )
    # Once the terminal hangs up (every slave fd closed: the process and its children are
    # gone) nothing can be written or resized any more, so the master is released at once
    # instead of waiting for the engine's close(); buffered output stays readable.
    stdout.call_at_eof(stdio.close)
    return stdio


class ConsoleSocket:
    """An AF_UNIX listener for runc's --console-socket; yields the pty master it is sent.

    It lives in its own mode-0700 temp dir: sun_path holds only 108 bytes, too few for
    paths under a deep exec root.
    """

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="skiff-pty-"))
        self.path = self._dir / "console.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(self.path))
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    async def receive(self) -> int:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(conn, 4096, 4)
                    break
                except (BlockingIOError, InterruptedError):
                    await _readable(loop, conn.fileno())
        if not fds:
            raise errdefs.Internal("console socket: the runtime sent no terminal")
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def set_winsize(fd: int, width: int, height: int) -> None:
    """TIOCSWINSZ on the master; the kernel sends SIGWINCH to the terminal's foreground group."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def get_winsize(fd: int) -> tuple[int, int]:
    """(width, height) of a terminal."""
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return cols, rows


__all__ = [
    "HIGH_WATER",
    "VEOF",
    "ConsoleSocket",
    "EmptyOutput",
    "FdInput",
    "FdOutput",
    "FdStdio",
    "PipeIO",
    "get_winsize",
    "set_winsize",
    "terminal_stdio",
]
