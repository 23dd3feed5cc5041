"""The daemon's event bus: what ``GET /events`` streams (dockerd's ``daemon/events``).

Services call ``publish`` (synchronous, never blocks). The bus keeps the last 256 events in a
ring, as dockerd does, so ``since``/``until`` can replay them, and hands each live event to
every subscriber's bounded queue. A subscriber whose queue overflows has fallen too far
behind: it is dropped (its stream ends after what it already has) rather than slowing the
publisher or growing without bound. ``close()`` ends every stream at daemon shutdown, so
uvicorn's graceful shutdown is not held open by ``docker events`` clients.

Not here: filter semantics (the API layer passes a predicate) and the HTTP framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger("skiff.events")

RING_SIZE = 256
QUEUE_SIZE = 1024


@dataclass(frozen=True)
class Event:
    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    time_nano: int = 0
    scope: str = "local"

    def to_message(self) -> dict[str, Any]:
        """Docker's events.Message, with the legacy fields dockerd still sends below API 1.52."""
        message: dict[str, Any] = {}
        # docker CLI < 25 (and compose through it) read status/id/from and break without them.
        if self.type in ("container", "image"):
            legacy = {"status": self.action, "id": self.actor_id}
            if self.type == "container":
                legacy["from"] = self.attributes.get("image", "")
            # Go's omitempty: a prune event (no actor ID) has "status" alone.
            message.update((key, value) for key, value in legacy.items() if value)
        message.update(
            Type=self.type,
            Action=self.action,
            Actor={"ID": self.actor_id, "Attributes": dict(self.attributes)},
            scope=self.scope,
            time=self.time_nano // 1_000_000_000,
            timeNano=self.time_nano,
        )
        return message


Matcher = Callable[[Event], bool]


def _match_all(_: Event) -> bool:
    return True


class Subscription:
    """One listener: the replayed ``backlog`` plus live events, read with ``await get()``."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        match: Matcher,
        backlog: list[Event],
        maxsize: int,
    ) -> None:
        self.backlog = backlog
        self.dropped = False
        self._bus = bus
        self._loop = loop
        self._match = match
        self._maxsize = maxsize
        self._pending: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> Event | None:
        """The next live event; None once the subscription is closed and drained."""
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._bus._forget(self)

    def _deliver(self, event: Event) -> None:
        if self._closed or not self._match(event):
            return
        if len(self._pending) >= self._maxsize:
            log.warning("dropping an events subscriber that fell %d events behind", self._maxsize)
            self.dropped = True
            self.close()
            return
        self._pending.append(event)
        self._wakeup.set()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the subscriber's loop, directly when already on it."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(fn)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EventBus:
    """Ring buffer + fan-out. ``publish`` may be called from any thread."""

    def __init__(
        self,
        ring_size: int = RING_SIZE,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._queue_size = queue_size
        self._clock = clock
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._closed_event = asyncio.Event()

    def publish(
        self, type: str, action: str, actor_id: str, attributes: dict[str, str] | None = None
    ) -> None:
        event = Event(type, action, actor_id, dict(attributes or {}), self._clock())
        with self._lock:
            self._ring.append(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._call(functools.partial(sub._deliver, event))

    def subscribe(
        self, *, since: int | None = None, until: int | None = None, match: Matcher | None = None
    ) -> Subscription:
        """Listen from now on; with ``since`` and/or ``until`` (unix ns) replay the ring first.

        Like dockerd, nothing is replayed when neither bound is given. Must be called on the
        event loop that will read the subscription. After ``close()`` the subscription is
        born closed (backlog only).
        """
        matcher = match or _match_all
        loop = asyncio.get_running_loop()
        with self._lock:
            backlog = self._replay(since, until, matcher)
            sub = Subscription(self, loop, matcher, backlog, self._queue_size)
            if self._closed:
                sub._closed = True
            else:
                self._subscribers.add(sub)
        return sub

    def _replay(self, since: int | None, until: int | None, match: Matcher) -> list[Event]:
        if since is None and until is None:
            return []
        lower = since or 0
        picked: list[Event] = []
        for event in reversed(self._ring):
            if event.time_nano < lower:
                break
            if until is not None and until > 0 and event.time_nano > until:
                continue
            if match(event):
                picked.append(event)
        picked.reverse()
        return picked

    def _forget(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    @property
    def listener_count(self) -> int:
        """dockerd's ``NEventsListener``."""
        with self._lock:
            return len(self._subscribers)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Daemon shutdown: end every stream; later subscriptions get their backlog only."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscribers = list(self._subscribers)
        for sub in subscribers:
            sub._call(sub.close)
        self._closed_event.set()

    async def wait_closed(self) -> None:
        """For other long streams (logs -f, wait) that must also end at shutdown."""
        await self._closed_event.wait()
