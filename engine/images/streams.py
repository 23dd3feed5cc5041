"""Run blocking image work (tar reading/writing, layer unpacking) in a worker thread and hand what it
produces to async code as it comes: progress messages for load, tar chunks for save.

The producer calls ``emit(item)``; with a bounded queue that blocks the worker when the client
reads slowly (backpressure for save). When the consumer goes away (client disconnect, the generator
is closed or cancelled) the next ``emit`` raises ``Cancelled`` in the worker, whose ``finally``
blocks then unwind whatever it was building. The consumer never waits for the worker on the way
out: under anyio's level-triggered cancellation every await in a cancelled scope fails again, so
cleanup belongs to the worker thread itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

_POLL = 0.25


class Cancelled(Exception):
    """The consumer is gone; raised inside the worker by ``emit``."""


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Emitter(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop = loop
        self._queue = queue
        self.cancelled = threading.Event()

    def _put(self, item: object, honour_cancel: bool) -> None:
        if honour_cancel and self.cancelled.is_set():
            raise Cancelled()
        try:
            fut = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            raise Cancelled() from None
        while True:
            try:
                fut.result(timeout=_POLL)
                return
            except concurrent.futures.TimeoutError:
                if self.cancelled.is_set():
                    fut.cancel()
                    raise Cancelled() from None
            except concurrent.futures.CancelledError:
                raise Cancelled() from None

    def __call__(self, item: T) -> None:
        self._put(item, True)

    def check(self) -> None:
        """Raise Cancelled if the consumer is gone (for loops that emit nothing for a while)."""
        if self.cancelled.is_set():
            raise Cancelled()


async def iterate_in_thread(fn: Callable[[Emitter[T]], None], maxsize: int = 64) -> AsyncIterator[T]:
    """Yield what ``fn`` emits from a worker thread; re-raise what it raises."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
    emitter: Emitter[T] = Emitter(loop, queue)

    def runner() -> None:
        final: object
        try:
            fn(emitter)
            final = _Done()
        except BaseException as e:
            final = _Failed(e)
        if emitter.cancelled.is_set():
            return
        with contextlib.suppress(Cancelled):
            emitter._put(final, False)

    worker = loop.run_in_executor(None, runner)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _Done):
                break
            if isinstance(item, _Failed):
                if isinstance(item.exc, Cancelled):
                    break
                raise item.exc
            yield cast(T, item)
    finally:
        emitter.cancelled.set()
        _ = worker  # the worker finishes (and unwinds) on its own


class _End:
    pass


async def stream_task(
    work: Callable[[Callable[[T], None]], Awaitable[None]],
    on_error: Callable[[Exception], T],
    owner: set[asyncio.Task[None]],
) -> AsyncIterator[T]:
    """Yield what the coroutine ``work(emit)`` emits; its failure becomes a last item ``on_error(exc)``.

    ``work`` runs as a task of its own (held in ``owner``, which cancels it on shutdown). When the
    consumer goes away the task is cancelled, not awaited: it unwinds on its own, outside the
    consumer's (level-triggered) cancel scope.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def runner() -> None:
        try:
            await work(queue.put_nowait)
        except Exception as e:
            queue.put_nowait(on_error(e))
        finally:
            queue.put_nowait(_End())

    task = asyncio.create_task(runner())
    owner.add(task)
    task.add_done_callback(owner.discard)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                break
            yield cast(T, item)
    finally:
        if not task.done():
            task.cancel()
