"""Tool calls and the whole delta, end to end: the official SDK through a real broker gets what
the backend streams (tool calls, refusal, reasoning), and resumes join exactly mid-call."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.helpers import complete, sdk
from tests.e2e.sse import Frame, iter_frames, parse_frames
from tests.e2e.ws_client import recv, send, ws_url
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string"}, "hour24": {"type": "boolean"}},
                "required": ["tz"],
            },
        },
    },
]
ASK = [{"role": "user", "content": "What's the weather and the time in Oslo?"}]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    """Two gateway nodes (reply partitions 0,2 and 1,3), one worker, llmsim paced so that a
    stream can be cut in the middle of a tool call's arguments."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="tools",
        gateways=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "200"},
    ) as sys_:
        yield sys_


async def _streamed_calls(base_url: str, messages: list[dict[str, Any]], **params: Any):
    """Tool calls assembled from a stream's fragments, the finish reason, and the chunks."""
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async with sdk(base_url) as client:
        stream = await client.chat.completions.create(
            messages=messages,  # type: ignore[arg-type]
            stream=True,
            **params,
        )
        async for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                if piece.function is not None:
                    call["name"] += piece.function.name or ""
                    call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


def _calls_of(completion: Any) -> list[dict[str, str]]:
    return [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in completion.choices[0].message.tool_calls or ()
    ]


class TestToolCalls:
    async def test_two_tool_calls_equal_the_backend_s_streamed_and_not(self, system: System):
        direct = await complete(system.llmsim_url, ASK, model="x", tools=TOOLS)
        expected = _calls_of(direct)
        assert [c["name"] for c in expected] == ["get_weather", "get_time"]
        assert direct.choices[0].finish_reason == "tool_calls"

        streamed, finish = await _streamed_calls(
            system.gateway_url, ASK, model="small", tools=TOOLS
        )
        assert streamed == expected and finish == "tool_calls"
        for call in streamed:
            assert isinstance(json.loads(call["arguments"]), dict)

        whole = await complete(system.gateway_url, ASK, model="small", tools=TOOLS)
        assert _calls_of(whole) == expected
        assert whole.choices[0].finish_reason == "tool_calls"
        assert whole.choices[0].message.content is None
        assert whole.usage is not None and whole.usage.completion_tokens > 0

    async def test_the_follow_up_with_both_results_gets_the_backend_s_text(self, system: System):
        first = await complete(system.gateway_url, ASK, model="small", tools=TOOLS)
        calls = first.choices[0].message.tool_calls
        assert calls is not None and len(calls) == 2
        history = [
            *ASK,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp_c": 4}'},
            {"role": "tool", "tool_call_id": calls[1].id, "content": '{"time": "14:05"}'},
        ]
        direct = await complete(system.llmsim_url, history, model="x", tools=TOOLS)
        through = await complete(system.gateway_url, history, model="small", tools=TOOLS)
        text = through.choices[0].message.content
        assert text and text == direct.choices[0].message.content
        assert through.choices[0].finish_reason == direct.choices[0].finish_reason


class TestWholeDelta:
    async def test_refusal_and_reasoning_reach_the_sdk(self, system: System):
        async with sdk(system.gateway_url) as client:
            stream = await client.chat.completions.create(
                model="small",
                messages=ASK,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                metadata={"llmsim_reasoning": "6", "llmsim_refusal": "true"},
            )
            chunks = [chunk async for chunk in stream]
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        refusal = "".join(d.refusal or "" for d in deltas)
        assert reasoning and refusal
        assert not "".join(d.content or "" for d in deltas)
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens_details is not None
        assert usage.completion_tokens_details.reasoning_tokens == 6

        direct = await complete(
            system.llmsim_url, ASK, model="x", metadata={"llmsim_refusal": "true"}
        )
        assert refusal == direct.choices[0].message.refusal


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "small", "messages": ASK, "tools": TOOLS, "stream": True, **extra}


def _mid_call(data: str) -> bool:
    """A chunk that carries an argument fragment (no id): the middle of a tool call."""
    if not data.startswith("{"):
        return False
    choices = json.loads(data).get("choices") or [{}]
    calls = choices[0].get("delta", {}).get("tool_calls") or []
    return bool(calls) and "id" not in calls[0]


async def _get_frames(url: str, request_id: str, after: int | None = None) -> list[Frame]:
    headers = {} if after is None else {"last-event-id": str(after)}
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", f"{url}/v1/streams/{request_id}", headers=headers) as resp,
    ):
        assert resp.status_code == 200
        return [f async for f in iter_frames(resp)]


class TestResumeMidCall:
    async def test_an_sse_stream_cut_mid_arguments_resumes_exactly_on_the_other_node(
        self, system: System
    ):
        a, b = (g.url for g in system.gateways)
        before: list[Frame] = []
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", f"{a}/v1/chat/completions", json=_body()) as resp,
        ):
            request_id = resp.headers["x-request-id"]
            async for frame in iter_frames(resp):
                before.append(frame)
                if _mid_call(frame[1]) and sum(_mid_call(d) for _, d in before) >= 3:
                    break  # the client is cut off in the middle of the first call's arguments
        last = int(next(i for i, _ in reversed(before) if i is not None))
        after = await _get_frames(b, request_id, last)
        whole = await _get_frames(b, request_id)
        assert before + after == whole
        assert whole[-1] == (None, "[DONE]")
        raw = "".join(f"data: {d}\n\n" for _, d in whole)
        assert '"finish_reason":"tool_calls"' in raw and parse_frames(raw)

    async def test_a_websocket_cut_mid_arguments_resumes_exactly_on_the_other_node(
        self, system: System
    ):
        a, b = (g.url for g in system.gateways)
        async with connect(ws_url(a)) as first:
            await send(first, type="chat", id="c", model="small", messages=ASK, tools=TOOLS)
            ack = await recv(first)
            request_id = ack["request_id"]
            before: list[dict[str, Any]] = []
            while True:
                event = await recv(first)
                before.append(event)
                pieces = event.get("tool_calls") or []
                if pieces and "id" not in pieces[0] and pieces[0]["arguments"]:
                    break
        async with connect(ws_url(b)) as second:
            after = await _resume(second, request_id, before[-1]["seq"])
            whole = await _resume(second, request_id, -1)
        assert before + after == whole
        assert whole[-1]["type"] == "completed" and whole[-1]["finish_reason"] == "tool_calls"
        calls: dict[int, str] = {}
        for event in whole:
            for piece in event.get("tool_calls") or ():
                calls[piece["index"]] = calls.get(piece["index"], "") + piece["arguments"]
        assert len(calls) == 2 and all(json.loads(args) for args in calls.values())


async def _resume(conn: Any, request_id: str, last_seq: int) -> list[dict[str, Any]]:
    await send(conn, type="resume", id="r", request_id=request_id, last_seq=last_seq)
    assert (await recv(conn))["type"] == "ack"
    events = []
    while not events or events[-1]["type"] not in ("completed", "failed"):
        events.append(await recv(conn))
    return events
