"""The worker-thread bridge: ordering, errors, backpressure and unwinding when the consumer leaves."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.images.streams import Cancelled, Emitter, iterate_in_thread

from .conftest import run


def test_items_errors_and_order() -> None:
    def produce(emit: Emitter[int]) -> None:
        for i in range(100):
            emit(i)
        raise ValueError("boom")

    async def consume() -> list[int]:
        got = []
        with pytest.raises(ValueError, match="boom"):
            async for item in iterate_in_thread(produce, maxsize=2):
                got.append(item)
        return got

    assert run(consume()) == list(range(100))


def test_consumer_leaving_unwinds_the_worker() -> None:
    unwound = threading.Event()
    produced: list[int] = []

    def produce(emit: Emitter[int]) -> None:
        try:
            for i in range(10_000):
                emit(i)
                produced.append(i)
        except Cancelled:
            pass
        finally:
            unwound.set()

    async def consume() -> None:
        stream = iterate_in_thread(produce, maxsize=2)
        async for item in stream:
            if item == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]

    run(consume())
    assert unwound.wait(5)
    assert len(produced) < 100  # backpressure: the worker never ran far ahead


def test_cancelled_task_unwinds_the_worker() -> None:
    unwound = threading.Event()

    def produce(emit: Emitter[int]) -> None:
        try:
            while True:
                emit(1)
                time.sleep(0.001)
        finally:
            unwound.set()

    async def consume() -> None:
        async def reader() -> None:
            async for _ in iterate_in_thread(produce, maxsize=1):
                await asyncio.sleep(0)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(consume())
    assert unwound.wait(5)
