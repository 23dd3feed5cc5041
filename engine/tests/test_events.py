"""EventBus: ring replay, live fan-out, bounded queues, shutdown, message shape."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest

from engine.events import RING_SIZE, Event, EventBus

pytestmark = pytest.mark.anyio


def ticking_clock(start: int = 1_000 * 10**9, step: int = 10**9):
    counter = itertools.count()
    return lambda: start + next(counter) * step


async def test_live_events_reach_every_subscriber():
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    assert bus.listener_count == 2
    bus.publish("container", "start", "c1", {"name": "web"})
    for sub in (a, b):
        event = await asyncio.wait_for(sub.get(), 1)
        assert (event.type, event.action, event.actor_id, dict(event.attributes)) == (
            "container",
            "start",
            "c1",
            {"name": "web"},
        )
        assert sub.backlog == []
    a.close()
    assert bus.listener_count == 1


async def test_no_replay_without_since_or_until():
    bus = EventBus()
    bus.publish("image", "pull", "busybox:latest")
    assert bus.subscribe().backlog == []


async def test_replay_since_and_until_bounds():
    bus = EventBus(clock=ticking_clock())
    for i in range(5):  # times 1000s .. 1004s
        bus.publish("volume", "create", f"v{i}")
    sec = 10**9
    assert [e.actor_id for e in bus.subscribe(since=1002 * sec).backlog] == ["v2", "v3", "v4"]
    assert [e.actor_id for e in bus.subscribe(until=1001 * sec).backlog] == ["v0", "v1"]
    assert [e.actor_id for e in bus.subscribe(since=1001 * sec, until=1003 * sec).backlog] == [
        "v1",
        "v2",
        "v3",
    ]
    assert [e.actor_id for e in bus.subscribe(since=0).backlog] == [f"v{i}" for i in range(5)]


async def test_replay_applies_the_matcher():
    bus = EventBus()
    bus.publish("volume", "create", "v1")
    bus.publish("network", "create", "n1")
    sub = bus.subscribe(since=0, match=lambda e: e.type == "network")
    assert [e.actor_id for e in sub.backlog] == ["n1"]
    bus.publish("volume", "destroy", "v1")
    bus.publish("network", "destroy", "n1")
    event = await asyncio.wait_for(sub.get(), 1)
    assert (event.type, event.action) == ("network", "destroy")


async def test_ring_keeps_the_last_256():
    bus = EventBus()
    for i in range(RING_SIZE + 10):
        bus.publish("container", "create", str(i))
    backlog = bus.subscribe(since=0).backlog
    assert len(backlog) == RING_SIZE
    assert backlog[0].actor_id == "10" and backlog[-1].actor_id == str(RING_SIZE + 9)


async def test_a_subscriber_that_falls_behind_is_dropped():
    bus = EventBus(queue_size=3)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(4):
        bus.publish("container", "start", str(i))
        assert (await fast.get()).actor_id == str(i)
    assert slow.dropped and slow.closed
    assert bus.listener_count == 1
    # What it already had is still delivered, then the stream ends.
    assert [(await slow.get()).actor_id for _ in range(3)] == ["0", "1", "2"]
    assert await slow.get() is None


async def test_close_ends_every_stream_and_later_subscriptions():
    bus = EventBus()
    sub = bus.subscribe()
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    bus.close()
    assert await asyncio.wait_for(waiter, 1) is None
    await asyncio.wait_for(bus.wait_closed(), 1)
    assert bus.closed and bus.listener_count == 0
    bus.publish("container", "die", "c1")
    late = bus.subscribe(since=0)
    assert [e.action for e in late.backlog] == ["die"]
    assert await late.get() is None
    bus.close()  # idempotent


async def test_publish_from_another_thread():
    bus = EventBus()
    sub = bus.subscribe()
    thread = threading.Thread(target=bus.publish, args=("image", "load", "sha256:abc"))
    thread.start()
    thread.join()
    event = await asyncio.wait_for(sub.get(), 1)
    assert event.action == "load"


async def test_subscription_context_manager_unsubscribes():
    bus = EventBus()
    with bus.subscribe() as sub:
        assert bus.listener_count == 1
    assert sub.closed and bus.listener_count == 0


def test_container_message_has_legacy_fields():
    event = Event(
        "container", "start", "c" * 64, {"image": "busybox", "name": "web"}, 1_700_000_000_123_456_789
    )
    assert event.to_message() == {
        "status": "start",
        "id": "c" * 64,
        "from": "busybox",
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": "c" * 64, "Attributes": {"image": "busybox", "name": "web"}},
        "scope": "local",
        "time": 1_700_000_000,
        "timeNano": 1_700_000_000_123_456_789,
    }


def test_image_and_other_messages():
    image = Event("image", "tag", "sha256:x", {"name": "a:b"}, 5).to_message()
    assert image["status"] == "tag" and image["id"] == "sha256:x" and "from" not in image
    network = Event("network", "create", "n1", {"name": "net", "type": "bridge"}, 5).to_message()
    assert not {"status", "id", "from"} & network.keys()
    assert network["Actor"] == {"ID": "n1", "Attributes": {"name": "net", "type": "bridge"}}


def test_empty_legacy_fields_are_omitted_as_gos_omitempty():
    prune = Event("container", "prune", "", {"reclaimed": "0"}, 5).to_message()
    assert list(prune) == ["status", "Type", "Action", "Actor", "scope", "time", "timeNano"]
    assert prune["Actor"] == {"ID": "", "Attributes": {"reclaimed": "0"}}
    no_image = Event("container", "create", "c1", {"name": "web"}, 5).to_message()
    assert no_image["id"] == "c1" and "from" not in no_image


def test_publish_stamps_time():
    bus = EventBus(clock=lambda: 42)
    bus.publish("volume", "create", "v")

    async def read() -> Event:
        return bus.subscribe(since=0).backlog[0]

    assert asyncio.run(read()).time_nano == 42
