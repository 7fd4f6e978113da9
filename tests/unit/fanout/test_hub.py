"""Hub: routes each request's events to all its watchers; a slow watcher is dropped alone."""

import asyncio

import pytest

from contracts import ErrorCode, Failed, StreamEvent
from services.fanout.hub import Hub, SubscriberDropped, Subscription

from .events import REQUEST, Attempt


async def _take(sub: Subscription, n: int) -> list[StreamEvent | None]:
    async with asyncio.timeout(2):
        return [await sub.next() for _ in range(n)]


async def _all(sub: Subscription) -> list[StreamEvent]:
    async with asyncio.timeout(2):
        return [event async for event in sub.events()]


class TestDelivery:
    async def test_a_subscriber_gets_the_stream_in_order(self) -> None:
        hub = Hub(buffer=16)
        sub = hub.subscribe(REQUEST)
        events = Attempt("a").stream("one", " two", " three")
        for event in events:
            hub.publish(event)
        assert await _all(sub) == events

    async def test_every_subscriber_gets_the_identical_sequence(self) -> None:
        hub = Hub(buffer=16)
        subs = [hub.subscribe(REQUEST) for _ in range(3)]
        a = Attempt("a")
        started, delta = a.started(), a.delta("x")
        for event in [started, delta, delta, a.delta("y"), a.completed()]:
            hub.publish(event)
        received = [await _all(sub) for sub in subs]
        assert [e.seq for e in received[0]] == [0, 1, 2, 3]  # the duplicate went nowhere
        assert received[1] == received[0]
        assert received[2] == received[0]

    async def test_worker_lost_reaches_every_subscriber_once(self) -> None:
        hub = Hub(buffer=16)
        subs = [hub.subscribe(REQUEST) for _ in range(2)]
        old, new = Attempt("old"), Attempt("new")
        for event in [old.started(), old.delta("Hi"), *new.stream("Hello")]:
            hub.publish(event)
        for sub in subs:
            events = await _all(sub)
            assert [e.type for e in events] == ["started", "delta", "failed"]
            last = events[-1]
            assert isinstance(last, Failed)
            assert last.code is ErrorCode.WORKER_LOST

    async def test_requests_are_kept_apart(self) -> None:
        hub = Hub(buffer=16)
        sub_a, sub_b = hub.subscribe("req-a"), hub.subscribe("req-b")
        a, b = Attempt("1", "req-a"), Attempt("2", "req-b")
        stream_a, stream_b = a.stream("A"), b.stream("B", "B")
        for pair in zip(stream_a, stream_b, strict=False):
            for event in pair:
                hub.publish(event)
        hub.publish(stream_b[-1])
        assert await _all(sub_a) == stream_a
        assert await _all(sub_b) == stream_b


class TestUnwatched:
    async def test_events_for_unwatched_requests_are_ignored(self) -> None:
        hub = Hub(buffer=16)
        sub = hub.subscribe(REQUEST)
        stranger = Attempt("x", request_id="nobody-watches")
        for event in stranger.stream("ignored"):
            hub.publish(event)
        mine = Attempt("a").started()
        hub.publish(mine)
        assert hub.watched_requests == 1
        assert not hub.is_watched("nobody-watches")
        assert await _take(sub, 1) == [mine]  # nothing of the stranger's was queued first

    def test_publishing_with_no_watchers_registers_nothing(self) -> None:
        hub = Hub(buffer=16)
        for event in Attempt("a").stream("x"):
            hub.publish(event)
        assert (hub.watched_requests, hub.subscriptions) == (0, 0)


class TestSlowSubscriber:
    async def test_an_overflowing_subscriber_is_dropped_alone(self) -> None:
        hub = Hub(buffer=4)
        fast, slow = hub.subscribe(REQUEST), hub.subscribe(REQUEST)
        events = Attempt("a").stream(*(f"t{i}" for i in range(10)))
        received = []
        for event in events:
            hub.publish(event)
            received += await _take(fast, 1)  # the fast one keeps up, the slow one never reads
        assert received == events
        assert slow.dropped and not fast.dropped
        with pytest.raises(SubscriberDropped):
            await _take(slow, 1)

    async def test_a_dropped_subscriber_does_not_hold_events_back(self) -> None:
        hub = Hub(buffer=4)
        slow = hub.subscribe(REQUEST)
        reader = hub.subscribe(REQUEST)
        events = Attempt("a").stream(*(f"t{i}" for i in range(6)))
        received = []
        for event in events:
            hub.publish(event)  # the slow one's fifth event overflows its buffer of 4
            received.append(await reader.next())  # the reader keeps up
        assert slow.dropped
        assert not reader.dropped
        assert received == events

    async def test_a_subscriber_within_its_buffer_is_not_dropped(self) -> None:
        hub = Hub(buffer=4)
        sub = hub.subscribe(REQUEST)
        events = Attempt("a").stream("x", "y")  # exactly 4 events
        for event in events:
            hub.publish(event)
        assert not sub.dropped
        assert await _all(sub) == events


class TestUnsubscribe:
    def test_closing_the_last_subscriber_forgets_the_request(self) -> None:
        hub = Hub(buffer=16)
        first, second = hub.subscribe(REQUEST), hub.subscribe(REQUEST)
        assert (hub.watched_requests, hub.subscriptions) == (1, 2)
        first.close()
        assert (hub.watched_requests, hub.subscriptions) == (1, 1)
        second.close()
        assert (hub.watched_requests, hub.subscriptions) == (0, 0)
        assert not hub.is_watched(REQUEST)

    def test_context_manager_unsubscribes(self) -> None:
        hub = Hub(buffer=16)
        with hub.subscribe(REQUEST):
            assert hub.watched_requests == 1
        assert hub.watched_requests == 0

    def test_closing_twice_is_harmless(self) -> None:
        hub = Hub(buffer=16)
        sub, other = hub.subscribe(REQUEST), hub.subscribe(REQUEST)
        sub.close()
        sub.close()
        assert hub.subscriptions == 1
        other.close()
        assert hub.watched_requests == 0

    async def test_a_closed_subscriber_gets_nothing_more(self) -> None:
        hub = Hub(buffer=16)
        gone, stays = hub.subscribe(REQUEST), hub.subscribe(REQUEST)
        a = Attempt("a")
        started = a.started()
        hub.publish(started)
        gone.close()
        rest = [a.delta("x"), a.completed()]
        for event in rest:
            hub.publish(event)
        assert await _take(gone, 1) == [started]
        with pytest.raises(TimeoutError):  # publish is synchronous: anything queued is there now
            await asyncio.wait_for(gone.next(), timeout=0.05)
        assert await _all(stays) == [started, *rest]

    def test_a_dropped_subscriber_still_unsubscribes(self) -> None:
        hub = Hub(buffer=16)
        sub = hub.subscribe(REQUEST)
        for event in Attempt("a").stream(*"x" * 20):
            hub.publish(event)
        assert sub.dropped
        sub.close()
        assert hub.watched_requests == 0
