"""`runc start` without a runc process: release a created container's init through its exec fifo.

`runc create` leaves the init blocked in open(2) of ``<root>/<id>/exec.fifo`` for writing. What
`runc start` then does (runc 1.1, libcontainer ``linuxContainer.exec``): open the fifo for reading,
read until end of file (the init writes one byte, then execs the user's process, which closes its
end), require that byte, and remove the fifo; runc reports a container whose init is alive and
whose fifo is gone as running. That costs a Go start-up, 9-23 ms of every container start here.

``release`` does the same from the daemon's event loop. It declines (``FifoUnavailable``, having
changed nothing) when the fifo is missing or the init is gone without having written the byte:
then `runc start` runs after all and answers with runc's own error text.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

FIFO_NAME = "exec.fifo"


class FifoUnavailable(Exception):
    """Nothing was released: leave the start to runc."""


def fifo_path(runc_root: Path, container_id: str) -> Path:
    return runc_root / container_id / FIFO_NAME


async def release(fifo: Path, init_exited: asyncio.Future[Any]) -> None:
    """Let the init blocked on ``fifo`` exec its process; return once it has (or has died trying).

    ``init_exited``: resolved when the init exits (only awaited, never consumed).
    """
    try:
        # Non-blocking: a blocking open would hang forever if the init died before opening its end.
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise FifoUnavailable(str(err)) from err
    try:
        got = await _read_to_eof(fd, init_exited)
    finally:
        os.close(fd)
    if not got:
        raise FifoUnavailable("the init exited without writing to its exec fifo")
    # Its absence is what makes runc call the container running.
    os.unlink(fifo)


async def _read_to_eof(fd: int, init_exited: asyncio.Future[Any]) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    woken = False
    while True:
        try:
            chunk: bytes | None = os.read(fd, 64)
        except BlockingIOError:  # a writer has it open and has not written (or closed) yet
            chunk = None
        if chunk:
            data += chunk
            continue
        # b"": no writer has it open. Before the init's open(2) returns that is no end of file;
        # after data, or after poll(2) reported the writer's close, it is.
        if (chunk == b"" and (data or woken)) or init_exited.done():
            return data
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, readable)
        try:
            await asyncio.wait([readable, init_exited], return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
        woken = readable.done()
        readable.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
