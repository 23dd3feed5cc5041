"""execfifo.py against a plain fifo and a process playing runc's init (no root needed)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.execfifo import FifoUnavailable, release

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# runc's init: open the fifo for writing (blocks until a reader comes), write one byte, wait a
# little (argv[2] seconds), then exec (the fd is O_CLOEXEC, so the exec closes it).
INIT = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CLOEXEC)
os.write(fd, b"0")
time.sleep(float(sys.argv[2]))
if sys.argv[3] == "exec":
    os.execv("/bin/sleep", ["sleep", "30"])
os.close(fd)
time.sleep(30)
"""


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "exec.fifo"
    os.mkfifo(path, 0o622)
    return path


def watch(proc: subprocess.Popen[bytes]) -> asyncio.Future[None]:
    async def wait() -> None:
        while proc.poll() is None:
            await asyncio.sleep(0.01)

    return asyncio.ensure_future(wait())


def init(path: Path, delay: float, how: str = "exec") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", INIT, str(path), str(delay), how])


async def test_release_lets_the_init_exec_and_removes_the_fifo(tmp_path: Path) -> None:
    path = fifo(tmp_path)
    proc = init(path, 0.3)
    try:
        started = time.monotonic()
        await asyncio.wait_for(release(path, watch(proc)), 10)
        # Not before the init's end closed, i.e. its exec (runc reads to end of file too).
        assert time.monotonic() - started >= 0.3
        assert not path.exists()
        assert proc.poll() is None
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep"
    finally:
        proc.kill()
        proc.wait()


async def test_an_init_that_closes_without_exec_after_writing_is_released(tmp_path: Path) -> None:
    path = fifo(tmp_path)
    proc = init(path, 0, "close")
    try:
        await asyncio.wait_for(release(path, watch(proc)), 10)
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


async def test_a_dead_init_is_left_to_runc(tmp_path: Path) -> None:
    path = fifo(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # never opens the fifo
    dead.wait()
    with pytest.raises(FifoUnavailable):
        await asyncio.wait_for(release(path, watch(dead)), 10)
    assert path.exists()  # unchanged: `runc start` answers with its own error


async def test_an_init_dying_while_released_is_left_to_runc(tmp_path: Path) -> None:
    path = fifo(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.3)"]  # dies without opening the fifo
    )
    with pytest.raises(FifoUnavailable):
        await asyncio.wait_for(release(path, watch(proc)), 10)
    assert path.exists()


async def test_a_writer_closing_without_a_byte_is_left_to_runc(tmp_path: Path) -> None:
    path = fifo(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; os.close(os.open(sys.argv[1], os.O_WRONLY)); time.sleep(30)",
            str(path),
        ]
    )
    try:
        with pytest.raises(FifoUnavailable):
            await asyncio.wait_for(release(path, watch(proc)), 10)
        assert path.exists()
    finally:
        proc.kill()
        proc.wait()


async def test_a_missing_fifo_is_left_to_runc(tmp_path: Path) -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(FifoUnavailable):
        await release(tmp_path / "exec.fifo", never)
