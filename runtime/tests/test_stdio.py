"""stdio.py over plain pipes, ptys and a socketpair-fed console socket (no root needed)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from runtime.stdio import ConsoleSocket, FdInput, FdOutput, PipeIO, get_winsize, terminal_stdio
from runtime.types import ConsoleSize, IOSpec

pytestmark = pytest.mark.timeout(30)


def _writer_thread(fd: int, data: bytes) -> threading.Thread:
    def write() -> None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_output_stream_carries_megabytes_and_then_eof() -> None:
    data = os.urandom(5 << 20)

    async def main() -> bytes:
        r, w = os.pipe()
        stream = FdOutput(r)
        thread = _writer_thread(w, data)
        got = b"".join([chunk async for chunk in stream])
        thread.join()
        assert stream.at_eof
        return got

    assert asyncio.run(main()) == data


def test_output_stream_stops_reading_at_high_water() -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.set_blocking(w, False)
        stream = FdOutput(r, high_water=100_000)
        written = 0
        # Fill until the pipe refuses: the stream must have stopped draining it.
        for _ in range(200):
            try:
                written += os.write(w, b"x" * 65536)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                try:
                    written += os.write(w, b"x" * 65536)
                except BlockingIOError:
                    break
            await asyncio.sleep(0)
        assert written < 100_000 + 2 * (1 << 20)  # bounded: high water + the pipe's own buffer
        os.close(w)
        total = 0
        while chunk := await stream.read():
            total += len(chunk)
        assert total == written

    asyncio.run(main())


def test_second_concurrent_reader_is_refused() -> None:
    async def main() -> None:
        r, w = os.pipe()
        stream = FdOutput(r)
        first = asyncio.ensure_future(stream.read())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await stream.read()
        os.write(w, b"a")
        assert await first == b"a"
        os.close(w)
        stream.close()

    asyncio.run(main())


def test_input_backpressure_and_close() -> None:
    data = os.urandom(4 << 20)

    async def main() -> bytes:
        r, w = os.pipe()
        sink = FdInput(w, tty=False)
        received = bytearray()

        def read_all() -> None:
            with os.fdopen(r, "rb") as f:
                received.extend(f.read())

        thread = threading.Thread(target=read_all)
        thread.start()
        await sink.write(data)
        await sink.close_stdin()
        await sink.write(b"dropped")  # after close: discarded, no error
        await asyncio.to_thread(thread.join)
        return bytes(received)

    assert asyncio.run(main()) == data


def test_input_after_reader_exit_is_discarded() -> None:
    async def main() -> None:
        r, w = os.pipe()
        os.close(r)
        sink = FdInput(w, tty=False)
        await sink.write(b"x" * 100_000)  # EPIPE: swallowed
        await sink.write(b"more")

    asyncio.run(main())


def test_pipe_io_without_stdin_uses_dev_null() -> None:
    async def main() -> None:
        pipes = PipeIO(IOSpec(stdin=False))
        try:
            assert os.readlink(f"/proc/self/fd/{pipes.child_stdin}") == "/dev/null"
            stdio = pipes.stdio()
            os.write(pipes.child_stdout, b"out")
            os.write(pipes.child_stderr, b"err")
        finally:
            pipes.close()
        assert await stdio.stdout.read() == b"out"
        assert await stdio.stdout.read() == b""
        assert await stdio.stderr.read() == b"err"
        await stdio.write_stdin(b"ignored")
        stdio.close()

    asyncio.run(main())


def test_terminal_stdio_size_veof_and_hangup_eof() -> None:
    async def main() -> None:
        master, slave = os.openpty()
        stdio = terminal_stdio(
            master, IOSpec(tty=True, stdin=True, console_size=ConsoleSize(height=24, width=80))
        )
        assert get_winsize(slave) == (80, 24)
        stdio.resize(132, 43)
        assert get_winsize(slave) == (132, 43)
        assert await stdio.stderr.read() == b""
        await stdio.close_stdin()  # VEOF, seen by the slave in canonical mode as end of input
        assert os.read(slave, 10) == b""
        os.write(slave, b"hello")
        assert b"hello" in await stdio.stdout.read()
        os.close(slave)  # hang-up: the master reads EIO, which must end the stream
        assert await stdio.stdout.read() == b""
        stdio.close()

    asyncio.run(main())


def test_console_socket_receives_the_master() -> None:
    async def main() -> None:
        console = ConsoleSocket()
        try:
            master, slave = os.openpty()

            def runc_side() -> None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(console.path))
                    socket.send_fds(s, [b"/dev/pts/0"], [master])

            receiving = asyncio.ensure_future(console.receive())
            await asyncio.to_thread(runc_side)
            got = await asyncio.wait_for(receiving, 5)
            os.close(master)
            os.write(got, b"x\n")
            assert os.read(slave, 10) == b"x\n"
            assert not os.get_inheritable(got)
            os.close(got)
            os.close(slave)
        finally:
            console.close()
        assert not console.path.parent.exists()

    asyncio.run(main())
