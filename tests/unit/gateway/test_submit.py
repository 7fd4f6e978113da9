"""EventStream: one client's ordered view of a request, and what leaving early means."""

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from contracts import Completed, TokenUsage
from services.common.metrics import GatewayMetrics
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
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    tracer: Any = None
    streams: set[Any] = field(default_factory=set)
    draining: bool = False

    def __post_init__(self) -> None:
        self.metrics = GatewayMetrics(self.registry)
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


class TestMetrics:
    """The request clock runs on the events as they are handed out, bound at `started`."""

    def _value(self, node: FakeNode, name: str, **labels: str) -> float:
        return node.registry.get_sample_value(name, labels) or 0.0

    async def test_a_streamed_request_records_ttft_duration_and_time_per_token(self) -> None:
        node, hub = FakeNode(), Hub(buffer=64)
        timer = node.metrics.request("chat")
        stream = EventStream(
            cast(GatewayNode, node), hub.subscribe(REQUEST), timer=timer, transport="http"
        )
        a = Attempt("a")
        usage = TokenUsage(prompt_tokens=5, completion_tokens=3, total_tokens=8)
        done = Completed(request_id=REQUEST, attempt="a", seq=4, finish_reason="stop", usage=usage)
        for event in [a.started(), a.delta("one"), a.delta(" two"), a.delta(" three"), done]:
            hub.publish(event)
        labels = {"gen_ai_operation_name": "chat", "api": "chat", "route": "explicit",
                  "tier": "small", "gen_ai_response_model": "m"}  # fmt: skip
        assert self._value(node, "tokenbus_gateway_active_streams", transport="http") == 1
        async with stream:
            await stream.first()
            await _drain(stream)
        ttft = "gen_ai_server_time_to_first_token_seconds_count"
        assert self._value(node, ttft, **labels) == 1  # once, not per delta
        duration = "gen_ai_server_request_duration_seconds_count"
        assert self._value(node, duration, **labels, error_type="") == 1
        per_token = "gen_ai_server_time_per_output_token_seconds_count"
        assert self._value(node, per_token, **labels) == 1
        assert self._value(node, "tokenbus_gateway_active_streams", transport="http") == 0
        assert self._value(node, "tokenbus_gateway_client_disconnects_total", transport="http") == 0

    async def test_leaving_early_counts_a_disconnect_and_no_duration(self) -> None:
        node, hub = FakeNode(), Hub(buffer=64)
        timer = node.metrics.request("responses")
        stream = EventStream(
            cast(GatewayNode, node), hub.subscribe(REQUEST), timer=timer, transport="ws"
        )
        a = Attempt("a")
        hub.publish(a.started())
        hub.publish(a.delta("half"))
        async with stream:
            await stream.first()
        assert self._value(node, "tokenbus_gateway_client_disconnects_total", transport="ws") == 1
        assert self._value(node, "tokenbus_gateway_active_streams", transport="ws") == 0
        assert node.registry.get_sample_value(
            "gen_ai_server_request_duration_seconds_count",
            {"gen_ai_operation_name": "chat", "api": "responses", "route": "explicit",
             "tier": "small", "gen_ai_response_model": "m", "error_type": ""},
        ) is None  # fmt: skip
