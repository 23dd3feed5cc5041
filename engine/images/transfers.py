"""Shared, bounded transfers (dockerd's ``xfer`` transfer manager, for blob downloads and uploads).

A transfer is keyed (a blob digest): whoever asks for a key that is already moving joins it
instead of starting another, sees the progress it reports from then on (plus the latest message
at once) and gets its result or its error. At most ``limit`` transfers run at a time; one that has
to wait for a slot reports ``Waiting``. When every watcher has gone (clients disconnected), the
transfer is cancelled. The manager owns its tasks and cancels them on ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from engine.images import progress
from engine.images.progress import Message

T = TypeVar("T")
Watcher = Callable[[Message], None]
Job = Callable[[Watcher], Awaitable[T]]


class _Transfer(Generic[T]):
    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.last: Message | None = None
        self.task: asyncio.Task[T] | None = None

    def emit(self, message: Message) -> None:
        self.last = message
        for watcher in list(self.watchers):
            watcher(message)


def _retrieve(task: asyncio.Task[T]) -> None:
    # Every waiter may have left before the end: consume the outcome so asyncio does not log it.
    if not task.cancelled():
        task.exception()


class TransferManager(Generic[T]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._active: dict[str, _Transfer[T]] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    def active(self, key: str) -> bool:
        return key in self._active

    async def run(self, key: str, display_id: str, job: Job[T], watcher: Watcher) -> T:
        """Run ``job`` for ``key`` (or join the run in progress) and return its result."""
        transfer = self._active.get(key)
        if transfer is None:
            transfer = _Transfer()
            transfer.task = asyncio.create_task(self._go(key, display_id, transfer, job))
            transfer.task.add_done_callback(_retrieve)
            self._active[key] = transfer
        elif transfer.last is not None:
            watcher(transfer.last)
        transfer.watchers.append(watcher)
        task = transfer.task
        assert task is not None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if watcher in transfer.watchers:
                transfer.watchers.remove(watcher)
            if not transfer.watchers and not task.done():
                task.cancel()
            raise
        finally:
            if watcher in transfer.watchers:
                transfer.watchers.remove(watcher)

    async def _go(self, key: str, display_id: str, transfer: _Transfer[T], job: Job[T]) -> T:
        try:
            slots = self._semaphore()
            if slots.locked():
                transfer.emit(progress.update(display_id, "Waiting"))
            async with slots:
                return await job(transfer.emit)
        finally:
            if self._active.get(key) is transfer:
                del self._active[key]

    async def close(self) -> None:
        tasks = [t.task for t in self._active.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
