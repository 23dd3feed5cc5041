"""The PUT /archive body pipe: chunks handed from the event loop to the extracting thread.

What matters for ``docker cp`` into a container: chunks reach the reader uncopied, the feeder
waits on the loop (not in a worker thread) while the buffer is full, and either side finishing
releases the other.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from engine.containers import archive
from engine.containers.archive import _BodyPipe


def _reader(pipe: _BodyPipe, got: list[bytes], size: int = 1 << 20) -> threading.Thread:
    def read() -> None:
        while chunk := pipe.read1(size):
            got.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_chunks_reach_the_reader_uncopied_and_in_order() -> None:
    async def main() -> None:
        pipe = _BodyPipe(asyncio.get_running_loop())
        sent = [bytes([i]) * (1000 + i) for i in range(20)]
        got: list[bytes] = []
        thread = _reader(pipe, got)
        for chunk in sent:
            assert await pipe.feed(chunk)
        await pipe.feed(None)
        await asyncio.to_thread(thread.join, 10)
        assert got == sent
        assert all(a is b for a, b in zip(got, sent, strict=True))  # the same objects: no copy

    asyncio.run(main())


def test_partial_reads_head_and_readinto() -> None:
    async def main() -> None:
        pipe = _BodyPipe(asyncio.get_running_loop())
        for part in (b"\x1f", b"\x8b\x08ab", b"cdef"):
            await pipe.feed(part)
        await pipe.feed(None)
        # head looks across chunks without consuming anything
        assert pipe.head(6) == b"\x1f\x8b\x08abc"
        assert pipe.read1(2) == b"\x1f\x8b"
        buf = bytearray(3)
        assert pipe.readinto(buf) == 3 and bytes(buf) == b"\x08ab"
        assert pipe.read() == b"cdef"
        assert pipe.read1(10) == b"" and pipe.head(4) == b""

    asyncio.run(main())


def test_a_full_pipe_holds_the_feeder_on_the_loop_until_half_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archive, "_PIPE_BYTES", 10_000)

    async def main() -> None:
        pipe = _BodyPipe(asyncio.get_running_loop())
        threads = threading.active_count()
        for _ in range(10):
            assert await pipe.feed(b"x" * 1000)
        blocked = asyncio.ensure_future(pipe.feed(b"y" * 1000))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        assert threading.active_count() <= threads  # waiting costs no thread
        taken = await asyncio.to_thread(lambda: [pipe.read1(1000) for _ in range(4)])
        assert sum(map(len, taken)) == 4000
        await asyncio.sleep(0.05)
        assert not blocked.done()  # 6,000 still buffered: more than half
        assert len(await asyncio.to_thread(pipe.read1, 1000)) == 1000
        assert await asyncio.wait_for(blocked, 5) is True

    asyncio.run(main())


def test_a_finished_reader_releases_a_waiting_feeder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "_PIPE_BYTES", 100)

    async def main() -> None:
        pipe = _BodyPipe(asyncio.get_running_loop())
        assert await pipe.feed(b"z" * 100)
        blocked = asyncio.ensure_future(pipe.feed(b"z"))
        await asyncio.sleep(0.02)
        assert not blocked.done()
        await asyncio.to_thread(pipe.finish)
        assert await asyncio.wait_for(blocked, 5) is False
        assert await pipe.feed(b"more") is False
        assert await pipe.feed(None) is False

    asyncio.run(main())


def test_a_waiting_reader_sees_the_end_when_the_feeder_gives_up() -> None:
    async def main() -> None:
        pipe = _BodyPipe(asyncio.get_running_loop())
        got: list[bytes] = []
        thread = _reader(pipe, got)
        await pipe.feed(b"part")
        await asyncio.sleep(0.02)
        pipe.close_feed()
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive() and got == [b"part"]

    asyncio.run(main())
