"""Generation against the real llmsim over HTTP: events, text, usage, params, cancel, errors."""

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from contracts import (
    STREAM_EVENT,
    ChatRequested,
    Completed,
    Delta,
    ErrorCode,
    Failed,
    Message,
    Started,
    StreamEvent,
    TokenUsage,
    new_request_id,
)
from services.common.models import RetryPolicy, sim_profile
from services.inference.backends import route_request
from services.inference.generation import (
    CANCEL_MSG,
    Generation,
    Outcome,
    classify_error,
    estimate_prompt_tokens,
)
from services.inference.reply import ReplyStream
from services.llmsim import answer_tokens, create_app
from services.llmsim.text import count_prompt_tokens
from tests.fakes import eventually, serve
from tests.unit.llmsim.conftest import fast_settings

TOPIC = "t.llm.tokens"
PARTITION = 3
HEADERS = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
MESSAGES = (
    Message(role="system", content="Be brief."),
    Message(role="user", content="Explain consumer groups"),
)
PLAIN_MESSAGES = [m.model_dump() for m in MESSAGES]
DEFAULT_TOKENS = 64  # llmsim's default answer length


@dataclass(frozen=True)
class Sent:
    topic: str
    value: bytes
    key: bytes
    partition: int
    headers: list[tuple[str, bytes]]


class FakeSend:
    """Stands in for the Kafka producer: records each send, and delivery succeeds at once."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def __call__(
        self, topic: str, value: bytes, key: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> "asyncio.Future[Any]":
        self.sent.append(Sent(topic, value, key, partition, headers))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    @property
    def events(self) -> list[StreamEvent]:
        return [STREAM_EVENT.validate_json(s.value) for s in self.sent]

    @property
    def deltas(self) -> list[Delta]:
        return [e for e in self.events if isinstance(e, Delta)]


def _request(**params: Any) -> ChatRequested:
    return ChatRequested(
        request_id=new_request_id(PARTITION, int(time.time() * 1000), "acme", b"secret"),
        tenant_id="acme",
        model="small",
        messages=MESSAGES,
        params=params,
        reply_partition=PARTITION,
    )


class OneClient:
    """The worker's client pool reduced to one given client with no slot limit."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client

    def get(self, _spec: object) -> openai.AsyncOpenAI:
        return self._client

    @contextlib.asynccontextmanager
    async def slot(self, _spec: object) -> AsyncIterator[None]:
        yield


NO_RETRY = RetryPolicy(attempts=1)


def _request_for(model: str) -> ChatRequested:
    return _request().model_copy(update={"model": model})


async def _generate(
    client: openai.AsyncOpenAI,
    request: ChatRequested,
    send: FakeSend,
    coalesce_s: float = 0.0,
    retry: RetryPolicy = NO_RETRY,
    idle_timeout_s: float | None = None,
) -> Outcome:
    route = route_request(sim_profile(str(client.base_url)), request)
    if idle_timeout_s is not None:
        plan = tuple(
            dataclasses.replace(
                t, backend=t.backend.model_copy(update={"idle_timeout_s": idle_timeout_s})
            )
            for t in route.plan
        )
        route = dataclasses.replace(route, plan=plan)
    reply = ReplyStream(send, TOPIC, request, attempt="attempt-1", headers=HEADERS)
    generation = Generation(
        request,
        route,
        OneClient(client),
        reply,  # type: ignore[arg-type]
        coalesce_s=coalesce_s,
        retry=retry,
        deadline=None,
    )
    outcome = await generation.run()
    await reply.close()
    return outcome


@pytest.fixture(scope="module")
async def llmsim_url() -> AsyncIterator[str]:
    """llmsim answering instantly, under real uvicorn."""
    async with serve(create_app(fast_settings())) as url:
        yield url


@pytest.fixture
async def client(llmsim_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{llmsim_url}/v1", api_key="x", max_retries=0) as c:
        yield c


class TestStream:
    async def test_events_are_started_deltas_completed_with_seq_from_zero(
        self, client: openai.AsyncOpenAI
    ) -> None:
        send = FakeSend()
        await _generate(client, _request(), send)
        events = send.events
        assert isinstance(events[0], Started)
        assert all(isinstance(e, Delta) for e in events[1:-1])
        assert isinstance(events[-1], Completed)
        assert [e.seq for e in events] == list(range(len(events)))
        assert len(events) == 1 + DEFAULT_TOKENS + 1  # one delta per token without coalescing
        assert {e.attempt for e in events} == {"attempt-1"}

    async def test_text_is_the_backends_answer(self, client: openai.AsyncOpenAI) -> None:
        send = FakeSend()
        await _generate(client, _request(), send)
        expected = "".join(answer_tokens(PLAIN_MESSAGES, None, DEFAULT_TOKENS))
        assert "".join(d.content for d in send.deltas) == expected

    async def test_usage_comes_from_the_backend(self, client: openai.AsyncOpenAI) -> None:
        send = FakeSend()
        outcome = await _generate(client, _request(), send)
        prompt = count_prompt_tokens(PLAIN_MESSAGES)
        assert prompt != estimate_prompt_tokens(_request())  # so an estimate would show
        expected = TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=DEFAULT_TOKENS,
            total_tokens=prompt + DEFAULT_TOKENS,
            estimated=False,
        )
        completed = send.events[-1]
        assert isinstance(completed, Completed)
        assert completed.usage == expected
        assert completed.finish_reason == "stop"
        assert (outcome.status, outcome.finish_reason, outcome.usage) == ("ok", "stop", expected)
        assert outcome.ttft_ms is not None and outcome.ttft_ms >= 0

    async def test_only_the_first_delta_carries_the_role(self, client: openai.AsyncOpenAI) -> None:
        send = FakeSend()
        await _generate(client, _request(), send)
        assert [d.role for d in send.deltas] == ["assistant"] + [None] * (DEFAULT_TOKENS - 1)

    async def test_started_names_the_route(self, client: openai.AsyncOpenAI) -> None:
        send = FakeSend()
        await _generate(client, _request(), send)
        started = send.events[0]
        assert isinstance(started, Started)
        assert (started.model, started.tier, started.route_reason) == (
            "llmsim-small",
            "small",
            "explicit",
        )
        assert abs(started.created - time.time()) < 60

    async def test_every_event_goes_to_the_reply_partition_keyed_by_request_id(
        self, client: openai.AsyncOpenAI
    ) -> None:
        send, request = FakeSend(), _request()
        await _generate(client, request, send)
        assert send.sent
        assert {(s.topic, s.key, s.partition) for s in send.sent} == {
            (TOPIC, request.request_id.encode(), PARTITION)
        }
        assert all(s.headers == HEADERS for s in send.sent)
        assert {e.request_id for e in send.events} == {request.request_id}


class TestParams:
    async def test_max_tokens_reaches_the_backend(self, client: openai.AsyncOpenAI) -> None:
        send = FakeSend()
        outcome = await _generate(client, _request(max_tokens=5), send)
        assert "".join(d.content for d in send.deltas) == "".join(
            answer_tokens(PLAIN_MESSAGES, 5, DEFAULT_TOKENS)
        )
        assert len(send.deltas) == 5
        assert outcome.finish_reason == "length"
        assert outcome.usage.completion_tokens == 5

    async def test_client_params_are_sent_and_own_params_win(self, llmsim_url: str) -> None:
        bodies: list[dict[str, Any]] = []

        async def record(request: httpx.Request) -> None:
            bodies.append(json.loads(request.content))

        http = httpx.AsyncClient(event_hooks={"request": [record]})
        async with openai.AsyncOpenAI(
            base_url=f"{llmsim_url}/v1", api_key="x", max_retries=0, http_client=http
        ) as client:
            request = _request(
                temperature=0.3, max_tokens=4, stop=["\n"], seed=7, model="sneaky", stream=False
            )
            await _generate(client, request, FakeSend())
        [body] = bodies
        assert (body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == (
            0.3,
            4,
            ["\n"],
            7,
        )
        assert (body["model"], body["stream"]) == ("llmsim-small", True)
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Explain consumer groups"},
        ]


class TestCoalescing:
    async def test_a_window_gives_fewer_deltas_with_the_same_text(
        self, client: openai.AsyncOpenAI
    ) -> None:
        per_token, coalesced = FakeSend(), FakeSend()
        await _generate(client, _request(), per_token)
        await _generate(client, _request(), coalesced, coalesce_s=0.05)
        assert len(coalesced.deltas) < len(per_token.deltas) == DEFAULT_TOKENS
        assert "".join(d.content for d in coalesced.deltas) == "".join(
            d.content for d in per_token.deltas
        )
        assert coalesced.deltas[0].role == "assistant"
        assert [e.seq for e in coalesced.events] == list(range(len(coalesced.events)))
        last = coalesced.events[-1]
        assert isinstance(last, Completed)
        assert last.usage.completion_tokens == DEFAULT_TOKENS


class TestStall:
    async def test_a_stall_mid_answer_fails_retryable_once_the_idle_timeout_passed(
        self, client: openai.AsyncOpenAI
    ) -> None:
        # Three tokens, then 3 s of silence: with a 0.3 s idle timeout the generation gives up
        # between 0.3 and 0.45 s after the last token (the deadline moves lazily), not at 3 s.
        send = FakeSend()
        request = _request(metadata={"llmsim_fault": "stall:3000;after:3"})
        t0 = time.monotonic()
        outcome = await _generate(client, request, send, idle_timeout_s=0.3)
        took = time.monotonic() - t0
        assert (outcome.status, outcome.error_code) == ("failed", ErrorCode.STREAM_TIMEOUT)
        last = send.events[-1]
        assert isinstance(last, Failed) and last.retryable
        assert len(send.deltas) == 3
        assert 0.3 <= took < 2.5  # well before the stall would have ended

    async def test_chunks_keep_a_slow_answer_alive_past_the_idle_timeout(self) -> None:
        # A token every 5 ms for 0.5 s, never silent for 0.2 s: the lazily moved deadline
        # (first set 0.3 s out) must keep moving, and the whole answer arrives.
        app = create_app(fast_settings(tokens_per_second=200))
        async with (
            serve(app) as url,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        ):
            send = FakeSend()
            t0 = time.monotonic()
            outcome = await _generate(client, _request(max_tokens=100), send, idle_timeout_s=0.2)
        assert outcome.status == "ok"
        assert len(send.deltas) == 100
        assert time.monotonic() - t0 >= 0.45  # it really outlasted the first deadline


class TestCancel:
    async def test_cancel_stops_upstream_and_reports_partial_usage(self) -> None:
        # Paced, so the answer is certainly still streaming when the cancel arrives.
        app = create_app(fast_settings(tokens_per_second=200))
        async with (
            serve(app) as url,
            httpx.AsyncClient(base_url=url) as http,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        ):
            send, request = FakeSend(), _request(max_tokens=1000)
            task = asyncio.create_task(_generate(client, request, send))

            async def streaming() -> bool:
                return len(send.deltas) >= 3

            await eventually(streaming)
            task.cancel(CANCEL_MSG)
            outcome = await asyncio.wait_for(task, 5)

            async def upstream_closed() -> bool:
                stats = (await http.get("/stats")).json()
                return stats["open_streams"] == 0 and stats["streams_closed_early"] == 1

            await eventually(upstream_closed)
            assert (await http.get("/stats")).json()["streams_completed"] == 0

        events = send.events
        last = events[-1]
        assert isinstance(last, Completed)
        assert last.finish_reason == "cancelled"
        assert [e.seq for e in events] == list(range(len(events)))
        received = len(send.deltas)
        assert 3 <= received < 1000
        prompt = estimate_prompt_tokens(request)
        assert last.usage == TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=received,
            total_tokens=prompt + received,
            estimated=True,
        )
        assert (outcome.status, outcome.finish_reason, outcome.usage) == (
            "cancelled",
            "cancelled",
            last.usage,
        )

    async def test_other_cancellations_propagate(self) -> None:
        # A shutdown leaves the request uncommitted for another worker: no terminal event.
        app = create_app(fast_settings(tokens_per_second=200))
        async with (
            serve(app) as url,
            openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
        ):
            send = FakeSend()
            task = asyncio.create_task(_generate(client, _request(max_tokens=1000), send))

            async def streaming() -> bool:
                return len(send.deltas) >= 1

            await eventually(streaming)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert {e.type for e in send.events} == {"started", "delta"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestBackendErrors:
    async def test_unreachable_backend_falls_back_then_fails_retryable(self) -> None:
        url = f"http://127.0.0.1:{_closed_port()}/v1"
        send = FakeSend()
        async with openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0) as client:
            outcome = await _generate(client, _request(), send)
        events = send.events
        # One try on the small tier, one on its fallback (large): both unreachable.
        assert [e.type for e in events] == ["started", "started", "failed"]
        assert [e.tier for e in events[:2]] == ["small", "large"]  # type: ignore[union-attr]
        assert events[1].retry_reason == "backend_unavailable"  # type: ignore[union-attr]
        failed = events[-1]
        assert isinstance(failed, Failed)
        assert failed.code is ErrorCode.BACKEND_UNAVAILABLE
        assert failed.retryable is True
        assert failed.seq == 2
        assert failed.usage is None  # nothing was generated
        assert "127.0.0.1" not in failed.message
        assert (outcome.status, outcome.error_code) == ("failed", ErrorCode.BACKEND_UNAVAILABLE)

    async def test_a_rejected_request_fails_final_as_invalid_request(
        self, client: openai.AsyncOpenAI
    ) -> None:
        send = FakeSend()
        outcome = await _generate(client, _request(max_tokens=0), send)  # llmsim answers 400
        failed = send.events[-1]
        assert isinstance(failed, Failed)
        assert (failed.code, failed.retryable) == (ErrorCode.INVALID_REQUEST, False)
        assert "400" in failed.message
        assert "max_tokens" not in failed.message  # the backend's body is not echoed
        assert outcome.status == "failed"


def _http_error(status: int) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://backend/v1/chat/completions")
    response = httpx.Response(status, request=request)
    error_class = {
        400: openai.BadRequestError,
        429: openai.RateLimitError,
        500: openai.InternalServerError,
    }[status]
    return error_class("boom", response=response, body=None)


class TestClassifyError:
    @pytest.mark.parametrize(
        ("exc", "code"),
        [
            (openai.APITimeoutError(httpx.Request("POST", "http://b")), ErrorCode.BACKEND_TIMEOUT),
            (
                openai.APIConnectionError(request=httpx.Request("POST", "http://b")),
                ErrorCode.BACKEND_UNAVAILABLE,
            ),
            (_http_error(400), ErrorCode.INVALID_REQUEST),
            (_http_error(429), ErrorCode.OVERLOADED),
            (_http_error(500), ErrorCode.BACKEND_UNAVAILABLE),
            (ValueError("bad chunk"), ErrorCode.BACKEND_ERROR),
        ],
        ids=["timeout", "connection", "400", "429", "500", "value"],
    )
    def test_sdk_errors_map_to_error_codes(self, exc: Exception, code: ErrorCode) -> None:
        assert classify_error(exc) is code


class TestRouteRequest:
    CONFIG = sim_profile("http://llmsim:8090/v1")

    @pytest.mark.parametrize("tier", ["small", "large"])
    def test_tier_names_pick_the_tier_then_fall_back_to_the_other(self, tier: str) -> None:
        route = route_request(self.CONFIG, _request_for(tier))
        other = "large" if tier == "small" else "small"
        assert route.tier == tier
        assert [p.backend for p in route.plan] == [
            self.CONFIG.tiers[tier][0],
            self.CONFIG.tiers[other][0],
        ]
        assert (route.model, route.reason) == (f"llmsim-{tier}", "explicit")

    def test_auto_is_scored_and_explained(self) -> None:
        route = route_request(self.CONFIG, _request_for("auto"))
        assert route.reason == "score"
        assert route.score is not None and route.features
        assert route.tier in ("small", "large")

    def test_a_concrete_model_picks_the_backend_serving_it_without_fallback(self) -> None:
        route = route_request(self.CONFIG, _request_for("llmsim-large"))
        assert [(p.tier, p.model, p.backend.name) for p in route.plan] == [
            ("large", "llmsim-large", "llmsim-large")
        ]
        assert route.reason == "explicit"

    def test_an_unknown_model_passes_through_to_the_small_tier(self) -> None:
        route = route_request(self.CONFIG, _request_for("gpt-4o-2024-08-06"))
        assert [(p.tier, p.model, p.backend.name) for p in route.plan] == [
            ("small", "gpt-4o-2024-08-06", "llmsim-small")
        ]
        assert route.reason == "passthrough"
        assert route.model == "gpt-4o-2024-08-06"  # sent to the backend under its own name
