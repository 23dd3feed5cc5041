"""Output fan-out (bounded subscribers, never-dropping sinks, exit ordering) and the stdin pump."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from engine import errdefs
from engine.containers.logread import read_logs
from engine.containers.logs import JsonFileLogger
from engine.containers.streams import (
    DEFAULT_DETACH_KEYS,
    OutputBroadcaster,
    StdinPump,
    StdinResult,
    Subscription,
    parse_detach_keys,
)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def drain(sub: Subscription) -> list[tuple[str, bytes]]:
    return [item async for item in sub]


# --- detach keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("", DEFAULT_DETACH_KEYS),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        ("a,b", b"ab"),
        ("ctrl-@", b"\x00"),
        ("ctrl-a,x,ctrl-_", b"\x01x\x1f"),
        ("ctrl-[,ctrl-\\,ctrl-],ctrl-^", b"\x1b\x1c\x1d\x1e"),
        ("DEL", b"\x7f"),
    ],
)
def test_parse_detach_keys(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


@pytest.mark.parametrize("spec", ["ctrl-P", "ab", "a,,b", "ctrl-", "é", "ctrl-1", ","])
def test_parse_detach_keys_errors(spec: str) -> None:
    with pytest.raises(errdefs.InvalidParameter) as exc:
        parse_detach_keys(spec)
    assert exc.value.message == f"Invalid detach keys ({spec}) provided"
    with pytest.raises(errdefs.Internal) as exc2:
        parse_detach_keys(spec, for_exec=True)
    assert exc2.value.message == f"Invalid escape keys ({spec}) provided"


# --- stdin pump ----------------------------------------------------------------------------------


class FakeConn:
    """The client side: chunks as they would arrive from the socket, then EOF."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.sizes: list[int] = []

    async def read(self, n: int) -> bytes:
        self.sizes.append(n)
        await asyncio.sleep(0)
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""


class FakeStdin:
    def __init__(self, broken: bool = False) -> None:
        self.data = b""
        self.writes: list[bytes] = []
        self.closed = False
        self.broken = broken

    async def write_stdin(self, data: bytes) -> None:
        if self.broken:
            raise BrokenPipeError
        self.writes.append(data)
        self.data += data

    async def close_stdin(self) -> None:
        self.closed = True


def pump(chunks: list[bytes], **kw: Any) -> tuple[StdinResult, FakeStdin]:
    target = FakeStdin(kw.pop("broken", False))
    result = run(StdinPump(FakeConn(chunks, kw.pop("error", None)), target, **kw).run())
    return result, target


def test_detach_sequence_split_across_chunks() -> None:
    result, stdin = pump([b"ls\r", b"abc\x10", b"\x11ignored"], tty=True, stdin_once=False)
    assert result is StdinResult.DETACHED
    assert stdin.data == b"ls\rabc" and not stdin.closed


def test_withheld_prefix_is_sent_when_not_a_match() -> None:
    result, stdin = pump([b"a\x10", b"b", b"\x10"], tty=True, stdin_once=False)
    assert result is StdinResult.EOF
    # ctrl-p is held until the next byte shows it is ordinary input; the last one until EOF.
    assert stdin.writes == [b"a", b"\x10b", b"\x10"]
    assert not stdin.closed  # TTY: dockerd never closes the pty's stdin, the session ends instead


def test_custom_keys_and_overlapping_prefix() -> None:
    keys = parse_detach_keys("a,a,b")
    result, stdin = pump([b"xa", b"a", b"a", b"by"], tty=True, stdin_once=False, detach_keys=keys)
    assert result is StdinResult.DETACHED
    assert stdin.data == b"xa"


def test_detach_keys_are_ignored_without_a_tty() -> None:
    # container/stream/attach.go: only a TTY attach scans for the escape sequence.
    result, stdin = pump([b"\x10\x11data"], tty=False, stdin_once=True)
    assert result is StdinResult.STDIN_CLOSED
    assert stdin.data == b"\x10\x11data" and stdin.closed


def test_eof_closes_stdin_only_for_stdin_once_without_tty() -> None:
    assert pump([b"abc"], tty=False, stdin_once=True)[0] is StdinResult.STDIN_CLOSED
    result, stdin = pump([b"abc"], tty=False, stdin_once=False)
    assert result is StdinResult.EOF and not stdin.closed
    result, stdin = pump([], tty=True, stdin_once=True)
    assert result is StdinResult.EOF and not stdin.closed


def test_client_reset_and_broken_stdin_end_the_pump() -> None:
    result, stdin = pump([b"x"], tty=False, stdin_once=True, error=ConnectionResetError())
    assert result is StdinResult.STDIN_CLOSED and stdin.data == b"x"
    result, stdin = pump([b"x", b"y"], tty=False, stdin_once=False, broken=True)
    assert result is StdinResult.EOF


# --- broadcaster ---------------------------------------------------------------------------------


def test_every_subscriber_sees_the_same_order_and_stream_filter() -> None:
    async def main() -> None:
        b = OutputBroadcaster()
        both, only_err = b.subscribe(), b.subscribe(stdout=False)
        readers = [asyncio.create_task(drain(s)) for s in (both, only_err)]
        await b.publish("stdout", b"1")
        await b.publish("stderr", b"2")
        await b.publish("stdout", b"")  # empty chunks are not news
        await b.publish("stdout", b"3")
        await b.close()
        got_both, got_err = await asyncio.gather(*readers)
        assert got_both == [("stdout", b"1"), ("stderr", b"2"), ("stdout", b"3")]
        assert got_err == [("stderr", b"2")]
        late = b.subscribe()
        assert await drain(late) == [] and late.ended
        assert b.subscriber_count == 0

    run(main())


def test_slow_subscriber_is_dropped_while_others_continue() -> None:
    async def main() -> None:
        b = OutputBroadcaster(subscriber_bytes=10, stall_timeout=0.2)
        slow, fast = b.subscribe(), b.subscribe()
        fast_reader = asyncio.create_task(drain(fast))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(20):
            await b.publish("stdout", b"chunk %02d\n" % i)
        elapsed = loop.time() - started
        await b.close()
        assert slow.dropped and slow.ended
        assert await drain(slow) == []  # a dropped reader's backlog is discarded
        assert [d for _, d in await fast_reader] == [b"chunk %02d\n" % i for i in range(20)]
        assert 0.15 < elapsed < 2  # waited about one stall_timeout, once

    run(main())


def test_a_reader_that_keeps_up_slowly_is_not_dropped() -> None:
    async def main() -> None:
        b = OutputBroadcaster(subscriber_bytes=4, stall_timeout=0.2)
        sub = b.subscribe()

        async def slow_reader() -> list[bytes]:
            got = []
            async for _, data in sub:
                got.append(data)
                await asyncio.sleep(0.05)  # slower than the producer, but making progress
            return got

        task = asyncio.create_task(slow_reader())
        for i in range(12):
            await b.publish("stdout", b"%02d" % i)
        await b.close()
        assert await task == [b"%02d" % i for i in range(12)]
        assert not sub.dropped

    run(main())


def test_unsubscribed_reader_no_longer_blocks_the_producer() -> None:
    async def main() -> None:
        b = OutputBroadcaster(subscriber_bytes=1, stall_timeout=30)
        sub = b.subscribe()
        await b.publish("stdout", b"x")
        publishing = asyncio.create_task(b.publish("stdout", b"y"))
        await asyncio.sleep(0.05)
        assert not publishing.done()  # waiting for room
        sub.close()
        await asyncio.wait_for(publishing, 1)
        assert b.subscriber_count == 0 and not sub.dropped

    run(main())


def test_exit_is_recorded_before_subscribers_see_end_of_stream() -> None:
    async def main() -> None:
        b = OutputBroadcaster()
        state: dict[str, Any] = {"exit_code": None}
        seen_at_eos: list[Any] = []

        async def session(sub: Subscription) -> None:
            async for _ in sub:
                pass
            seen_at_eos.append(state["exit_code"])

        tasks = [asyncio.create_task(session(b.subscribe())) for _ in range(3)]
        order: list[str] = []

        class Sink:
            def write(self, stream: str, data: bytes) -> None:
                order.append("write")

            async def drain(self) -> None:
                pass

            async def close(self) -> None:
                await asyncio.sleep(0.02)
                order.append("sink closed")

        b.add_sink(Sink())
        await b.publish("stdout", b"bye\n")

        async def record_exit() -> None:
            await asyncio.sleep(0.05)  # e.g. persisting State to disk
            order.append("exit recorded")
            state["exit_code"] = 7

        await b.close(after=record_exit)
        await asyncio.gather(*tasks)
        assert seen_at_eos == [7, 7, 7]
        assert order == ["write", "sink closed", "exit recorded"]
        await b.close(after=record_exit)  # idempotent
        assert order.count("exit recorded") == 1
        called: list[int] = []
        b2 = OutputBroadcaster()
        await b2.close(after=lambda: called.append(1))
        assert called == [1]

    run(main())


def test_logger_sink_gets_everything_even_when_subscribers_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "id-json.log"

    async def main() -> list[tuple[str, bytes]]:
        logger = JsonFileLogger(path)
        b = OutputBroadcaster(subscriber_bytes=1, stall_timeout=0.05)
        b.add_sink(logger)
        stuck = b.subscribe()

        class Source:
            def __init__(self, chunks: list[bytes]) -> None:
                self.chunks = chunks

            async def read(self) -> bytes:
                return self.chunks.pop(0) if self.chunks else b""

        await asyncio.gather(
            b.pump("stdout", Source([b"out %d\n" % i for i in range(50)])),
            b.pump("stderr", Source([b"err ", b"partial"])),
        )
        await b.close()
        assert stuck.dropped and logger.closed  # the broadcaster closed its sink
        return [item async for item in read_logs(path, stdout=True, stderr=True)]

    got = run(main())
    assert [d for s, d in got if s == "stdout"] == [b"out %d\n" % i for i in range(50)]
    assert [d for s, d in got if s == "stderr"] == [b"err partial"]


def test_sink_backpressure_pauses_the_pump(tmp_path: Path) -> None:
    async def main() -> None:
        logger = JsonFileLogger(tmp_path / "bp-json.log", high_water=1)
        b = OutputBroadcaster()
        b.add_sink(logger)
        for _ in range(20):
            await b.publish("stdout", b"x" * 1000 + b"\n")
            assert logger.pending_bytes <= 1  # publish returned only once the file caught up
        await b.close()

    run(main())
