"""EventStream: one client's ordered view of a request, and what leaving early means."""

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from contracts import Completed, TokenUsage
from services.common.openai_errors import OpenAIError
from services.fanout.hub import Hub, SubscriberDropped
from services.gateway.node import GatewayNode
from services.gateway.submit import EventStream, StreamStalled
from tests.unit.fanout.events import REQUEST, Attempt


@dataclass
class FakeNode:
    """What an EventStream asks of its gateway node, recorded."""

    first_event_timeout_s: float = 1.0
    idle_timeout_s: float = 1.0
    detached: list[str] = field(default_factory=list)
    released: list[tuple[Any, int | None]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = SimpleNamespace(
            first_event_timeout_s=self.first_event_timeout_s, idle_timeout_s=self.idle_timeout_s
        )
        self.publisher = SimpleNamespace(cancel=self._cancel)

    async def _cancel(self, request_id: str, reason: str) -> None:
        self.cancelled.append((request_id, reason))

    def dropped(self, request_id: str) -> None:
        self.drops.append(request_id)

    def detach(self, request_id: str) -> None:
        self.detached.append(request_id)

    def release(self, ticket: Any, tokens: int | None) -> None:
        self.released.append((ticket, tokens))


def _stream(node: FakeNode, hub: Hub, ticket: Any = None) -> EventStream:
    return EventStream(cast(GatewayNode, node), hub.subscribe(REQUEST), ticket=ticket)


async def _drain(stream: EventStream) -> list[list[Any]]:
    async with asyncio.timeout(2):
        return [batch async for batch in stream.batches()]


class TestOrderAndBatches:
    async def test_waiting_events_come_as_one_batch_up_to_the_terminal_one(self) -> None:
        node, hub = FakeNode(), Hub(buffer=64)
        stream = _stream(node, hub)
        events = Attempt("a").stream("one", " two", " three")
        for event in events:
            hub.publish(event)
        assert await stream.first() == events[0]
        assert await _drain(stream) == [events[1:]]
        assert stream.finished and stream.last_seq == 4

    async def test_events_after_the_terminal_one_are_not_handed_out(self) -> None:
        node, hub = FakeNode(), Hub(buffer=64)
        stream = _stream(node, hub)
        a = Attempt("a")
        for event in [a.started(), a.completed()]:
            hub.publish(event)
        late = a.delta("late")
        for sub in hub._watched[REQUEST]:
            sub.push(late)  # past the sequencer, as a bug would
        batches = await _drain(stream)
        assert [e.type for batch in batches for e in batch] == ["started", "completed"]


class TestFirstEvent:
    async def test_no_worker_in_time_withdraws_the_request_with_a_503(self) -> None:
        node, hub = FakeNode(first_event_timeout_s=0.05), Hub()
        stream = _stream(node, hub)
        with pytest.raises(OpenAIError) as raised:
            await stream.first()
        assert (raised.value.status, raised.value.code) == (503, "overloaded")
        assert node.cancelled == [(REQUEST, "no_worker")]
        await stream.aclose()
        assert node.detached == []  # withdrawn, not left: no grace period to start


class TestLeaving:
    async def test_leaving_before_the_end_detaches_and_releases_the_ticket(self) -> None:
        node, hub = FakeNode(), Hub()
        stream = _stream(node, hub, ticket="t")
        hub.publish(Attempt("a").started())
        await stream.first()
        await stream.aclose()
        await stream.aclose()  # idempotent
        assert node.detached == [REQUEST]
        assert node.released == [("t", None)]
        assert not hub.is_watched(REQUEST)

    async def test_a_finished_stream_releases_its_tokens_and_does_not_detach(self) -> None:
        node, hub = FakeNode(), Hub()
        a = Attempt("a")
        async with _stream(node, hub, ticket="t") as stream:
            hub.publish(a.started())
            done = Completed(
                finish_reason="stop",
                usage=TokenUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
                request_id=REQUEST,
                attempt="a",
                seq=1,
            )
            hub.publish(done)
            await stream.first()
            await _drain(stream)
        assert node.detached == []
        assert node.released == [("t", 7)]

    async def test_a_stall_ends_the_stream_without_a_detach(self) -> None:
        node, hub = FakeNode(idle_timeout_s=0.05), Hub()
        async with _stream(node, hub) as stream:
            hub.publish(Attempt("a").started())
            await stream.first()
            with pytest.raises(StreamStalled):
                await _drain(stream)
        assert node.detached == []

    async def test_a_dropped_slow_client_can_resume_so_it_counts_as_detached(self) -> None:
        node, hub = FakeNode(), Hub(buffer=2)
        stream = _stream(node, hub)
        a = Attempt("a")
        for event in [a.started(), a.delta("1"), a.delta("2"), a.delta("3")]:
            hub.publish(event)  # the third overflows the buffer of 2
        with pytest.raises(SubscriberDropped):
            await _drain(stream)
        await stream.aclose()
        assert node.detached == [REQUEST]
        assert node.drops == [REQUEST]
