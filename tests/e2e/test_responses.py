"""The Responses API end to end: the official SDK through two gateway nodes, a real broker, a
worker and llmsim gets, as Responses events and objects, exactly what llmsim answers the
equivalent chat request; background responses resume on any node and cancel at once; another
tenant's response ids are 404s; bad input is refused before anything is queued."""

import base64
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from contracts import TOPICS
from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings
from tests.capabilities import in_ci
from tests.e2e.helpers import complete, eventually, llmsim_stats
from tests.kafka_records import record_events
from tests.postgres import find_bin_dir, fresh_database
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PEPPER, ID_SECRET = "e2e-resp-pepper-0123456789", "e2e-resp-id-secret-0123456789"
# A real deployment seals conversations with its own keyring (the dev one is refused).
KEYRING = "e2e:" + base64.b64encode(b"e2e-responses!!!!!!!!!!!!!!!!!!!").decode()
# "small" answers at 100 tokens/s; "large" (llmsim-large) at 50, for a stream to cut mid-way.
SLOW = '{"llmsim-large": {"ttft_ms": 20, "tokens_per_second": 50}}'
INSTRUCTIONS = "You are terse."
QUESTION = "Tell me about the Kafka protocol."

# The equivalent chat request of `instructions=INSTRUCTIONS, input=QUESTION`.
CHAT = [
    {"role": "system", "content": INSTRUCTIONS},
    {"role": "user", "content": QUESTION},
]

WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"tz": {"type": "string"}, "hour24": {"type": "boolean"}},
    "required": ["tz"],
}
RESPONSES_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": WEATHER_PARAMS,
    },
    {
        "type": "function",
        "name": "get_time",
        "description": "Local time in a time zone",
        "parameters": TIME_PARAMS,
    },
]
# The same tools in the chat-completions format (nested under "function").
CHAT_TOOLS = [
    {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    for tool in RESPONSES_TOOLS
]
ASK = "What's the weather and the time in Oslo?"

TEXT_EVENTS_BEFORE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_EVENTS_AFTER = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """PostgreSQL when it is available (as in production), else a SQLite file both nodes
    share; under CI=true PostgreSQL is required."""
    if (
        in_ci()
        or os.environ.get("TEST_POSTGRES_URL")
        or os.environ.get("DATABASE_URL")
        or find_bin_dir()
    ):
        return await fresh_database(request.getfixturevalue("postgres_server"))
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('responses')}/responses.db"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, database_url: str) -> Iterator[System]:
    """Two gateway nodes in keys mode (reply partitions 0,2 and 1,3) on one database, one
    worker, llmsim paced so that a response can be cut, resumed and cancelled mid-way."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="resp",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "20",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100",
            "TOKENBUS_LLMSIM_PROFILES": SLOW,
        },
        gateway_env={
            "TOKENBUS_AUTH_MODE": "keys",
            "TOKENBUS_DATABASE_URL": database_url,
            "TOKENBUS_KEY_PEPPER": PEPPER,
            "TOKENBUS_ID_SECRET": ID_SECRET,
            "TOKENBUS_CONVERSATION_KEYS": KEYRING,
        },
    ) as sys_:
        yield sys_


async def _new_key(database_url: str) -> str:
    """A key of a fresh tenant without limits."""
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        _, key = await store.create_key(f"t-{uuid.uuid4().hex[:8]}")
    return key


@pytest.fixture(scope="module")
async def key(system: System, database_url: str) -> str:
    return await _new_key(database_url)


@pytest.fixture(scope="module")
async def other_key(system: System, database_url: str) -> str:
    return await _new_key(database_url)


@contextlib.asynccontextmanager
async def client(base_url: str, api_key: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60
    ) as sdk_client:
        yield sdk_client


def auth(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"}


async def direct(system: System, messages: list[dict[str, Any]], **params: Any) -> Any:
    """llmsim's own answer to the equivalent chat request."""
    return await complete(system.llmsim_url, messages, model="x", **params)


async def open_streams(system: System) -> int:
    return (await llmsim_stats(system.llmsim_url))["open_streams"]


def deltas(events: list[Any], kind: str = "response.output_text.delta") -> str:
    return "".join(e.delta for e in events if e.type == kind)


def assert_numbered(events: list[Any], first: int = 0) -> None:
    assert [e.sequence_number for e in events] == list(range(first, first + len(events)))


def dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump() for e in events]


class TestText:
    async def test_a_stream_has_openai_s_event_order_numbering_text_and_usage(
        self, system: System, key: str
    ) -> None:
        expected = await direct(system, CHAT)
        async with client(system.gateway_url, key) as c:
            stream = await c.responses.create(
                model="small", instructions=INSTRUCTIONS, input=QUESTION, stream=True
            )
            events = [event async for event in stream]
        types = [e.type for e in events]
        n = types.count("response.output_text.delta")
        assert n >= 1
        assert types == [
            *TEXT_EVENTS_BEFORE,
            *["response.output_text.delta"] * n,
            *TEXT_EVENTS_AFTER,
        ]
        assert_numbered(events)
        text = deltas(events)
        assert text == expected.choices[0].message.content
        assert events[-4].text == text  # response.output_text.done

        created, final = events[0].response, events[-1].response
        assert created.id.startswith("resp_") and final.id == created.id
        assert created.status == "in_progress" and final.status == "completed"
        assert final.output_text == text and final.instructions == INSTRUCTIONS
        [message] = final.output
        assert message.type == "message" and message.status == "completed"
        # As OpenAI's: the item is added empty, its part empty; the deltas fill them.
        assert events[2].item.content == [], events[2].item
        assert events[3].part.text == "", events[3].part
        item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
        assert item_ids == {message.id}
        usage = final.usage
        assert usage is not None
        assert usage.input_tokens == expected.usage.prompt_tokens
        assert usage.output_tokens == expected.usage.completion_tokens
        assert usage.total_tokens == usage.input_tokens + usage.output_tokens
        assert usage.input_tokens_details.cached_tokens == 0
        assert usage.output_tokens_details.reasoning_tokens == 0

    async def test_the_raw_sse_frames_name_their_type_and_number_and_end_with_done(
        self, system: System, key: str
    ) -> None:
        body = {"model": "small", "instructions": INSTRUCTIONS, "input": QUESTION, "stream": True}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(
                f"{system.gateways[1].url}/v1/responses", json=body, headers=auth(key)
            )
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/event-stream")
        blocks = [b for b in resp.text.replace("\r\n", "\n").split("\n\n") if b.strip()]
        blocks = [b for b in blocks if not b.startswith(":")]  # pings
        assert blocks[-1] == "data: [DONE]"
        frames = []
        for block in blocks[:-1]:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            assert set(fields) == {"event", "id", "data"}, block
            data = json.loads(fields["data"])
            assert fields["event"] == data["type"]
            assert fields["id"] == str(data["sequence_number"])
            frames.append(data)
        assert [f["sequence_number"] for f in frames] == list(range(len(frames)))
        assert frames[0]["type"] == "response.created"
        assert frames[-1]["type"] == "response.completed"
        expected = await direct(system, CHAT)
        text = "".join(f["delta"] for f in frames if f["type"] == "response.output_text.delta")
        assert text == expected.choices[0].message.content

    async def test_without_stream_the_response_has_the_same_text_and_is_completed(
        self, system: System, key: str
    ) -> None:
        expected = await direct(system, CHAT)
        async with client(system.gateways[1].url, key) as c:
            response = await c.responses.create(
                model="small", instructions=INSTRUCTIONS, input=QUESTION
            )
        assert response.status == "completed" and response.object == "response"
        assert response.output_text == expected.choices[0].message.content
        assert response.usage is not None
        assert response.usage.output_tokens == expected.usage.completion_tokens
        assert response.incomplete_details is None and response.error is None

    async def test_the_sdk_stream_helper_s_final_response_has_the_text(
        self, system: System, key: str
    ) -> None:
        expected = await direct(system, CHAT)
        async with (
            client(system.gateway_url, key) as c,
            c.responses.stream(model="small", instructions=INSTRUCTIONS, input=QUESTION) as stream,
        ):
            events = [event async for event in stream]
            final = await stream.get_final_response()
        text = expected.choices[0].message.content
        assert deltas(events) == text
        assert final.status == "completed" and final.output_text == text

    async def test_reasoning_streams_as_a_reasoning_item_before_the_message(
        self, system: System, key: str
    ) -> None:
        metadata = {"llmsim_reasoning": "6"}
        expected = (await direct(system, CHAT, metadata=metadata)).choices[0].message
        async with client(system.gateway_url, key) as c:
            stream = await c.responses.create(
                model="small",
                instructions=INSTRUCTIONS,
                input=QUESTION,
                metadata=metadata,
                stream=True,
            )
            events = [event async for event in stream]
        assert_numbered(events)
        final = events[-1].response
        assert events[-1].type == "response.completed" and final.status == "completed"
        assert [item.type for item in final.output] == ["reasoning", "message"]
        reasoning = deltas(events, "response.reasoning_text.delta")
        assert reasoning == (expected.model_extra or {}).get("reasoning_content")
        assert [part.text for part in final.output[0].content or ()] == [reasoning]
        assert deltas(events) == expected.content == final.output_text
        added = [e.item.type for e in events if e.type == "response.output_item.added"]
        assert added == ["reasoning", "message"]
        assert final.usage is not None
        assert final.usage.output_tokens_details.reasoning_tokens == 6

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
    async def test_max_output_tokens_ends_incomplete_with_exactly_that_many_tokens(
        self, system: System, key: str, stream: bool
    ) -> None:
        expected = await direct(system, CHAT, max_completion_tokens=7)
        async with client(system.gateway_url, key) as c:
            params: dict[str, Any] = {
                "model": "small",
                "instructions": INSTRUCTIONS,
                "input": QUESTION,
                "max_output_tokens": 7,
            }
            if stream:
                events = [e async for e in await c.responses.create(**params, stream=True)]
                assert events[-1].type == "response.incomplete"
                assert deltas(events) == expected.choices[0].message.content
                response = events[-1].response
            else:
                response = await c.responses.create(**params)
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage is not None and response.usage.output_tokens == 7
        assert response.output_text == expected.choices[0].message.content
        assert response.max_output_tokens == 7


class TestBackground:
    async def test_a_background_stream_cut_on_one_node_resumes_exactly_on_the_other(
        self, system: System, key: str
    ) -> None:
        # "large": 64 tokens at 50/s, so the stream is cut and resumed while it still runs.
        messages = [{"role": "user", "content": "Explain consumer groups at length."}]
        expected = (await direct(system, messages)).choices[0].message.content
        node_a, node_b = (g.url for g in system.gateways)
        before: list[Any] = []
        async with client(node_a, key) as a:
            stream = await a.responses.create(
                model="large", input=messages[0]["content"], background=True, stream=True
            )
            async for event in stream:
                before.append(event)
                if sum(e.type == "response.output_text.delta" for e in before) >= 3:
                    break
            await stream.close()
        assert [e.type for e in before[:3]] == [
            "response.created",
            "response.queued",
            "response.in_progress",
        ]
        assert before[0].response.background is True
        assert_numbered(before)
        rid, last = before[0].response.id, before[-1].sequence_number

        async with client(node_b, key) as b:
            resumed = await b.responses.retrieve(rid, stream=True, starting_after=last)
            after = [event async for event in resumed]
            assert after, "nothing after the cut"
            assert_numbered(after, first=last + 1)
            assert deltas(before) + deltas(after) == expected
            assert after[-1].type == "response.completed"
            done = await b.responses.retrieve(rid)
        assert done.status == "completed" and done.output_text == expected
        assert done.model_dump() == after[-1].response.model_dump()

        async with client(node_a, key) as a:
            replay = [e async for e in await a.responses.retrieve(rid, stream=True)]
            async with a.responses.stream(response_id=rid) as helper:
                helped = [e async for e in helper]
                final = await helper.get_final_response()
        live = dumped(before) + dumped(after)
        assert len(replay) == len(live)
        differ = [i for i, (x, y) in enumerate(zip(dumped(replay), live, strict=True)) if x != y]
        assert not differ, f"replayed events differ from the live ones at {differ}"
        assert [(e.type, e.sequence_number) for e in helped] == [
            (e.type, e.sequence_number) for e in replay
        ]
        assert final.output_text == expected

    async def test_a_cancel_stops_the_backend_within_a_second_and_is_final(
        self, system: System, key: str
    ) -> None:
        await eventually(lambda: _streams_are(system, 0), within=10)
        async with client(system.gateway_url, key) as a:
            queued = await a.responses.create(
                model="small",
                input="Write a very long essay.",
                max_output_tokens=2000,
                background=True,
            )
            assert queued.status in ("queued", "in_progress")
            assert queued.background is True and queued.output == []
            await eventually(lambda: _streams_are(system, 1), within=10)
        async with client(system.gateways[1].url, key) as b:
            asked = time.monotonic()  # measured from the cancel call, not from its return
            cancelled = await b.responses.cancel(queued.id)
            await eventually(lambda: _streams_are(system, 0), within=1.0)
            assert time.monotonic() - asked < 1.0
            assert cancelled.id == queued.id and cancelled.status == "cancelled"
            assert cancelled.usage is not None
            assert 0 < cancelled.usage.output_tokens < 2000
            assert 0 < len(cancelled.output_text) and cancelled.output[0].status == "incomplete"
            again = await b.responses.cancel(queued.id)
            assert again.model_dump() == cancelled.model_dump()
            retrieved = await b.responses.retrieve(queued.id)
            assert retrieved.model_dump() == cancelled.model_dump()
            events = [e async for e in await b.responses.retrieve(queued.id, stream=True)]
        assert events[-1].type == "response.incomplete"
        assert events[-1].response.status == "cancelled"
        assert_numbered(events)


async def _streams_are(system: System, count: int) -> bool:
    return await open_streams(system) == count


def _call_items(output: list[Any]) -> list[dict[str, str]]:
    return [
        {"id": item.call_id, "name": item.name, "arguments": item.arguments}
        for item in output
        if item.type == "function_call"
    ]


class TestTools:
    async def test_function_calls_equal_the_backend_s_and_their_results_get_its_text(
        self, system: System, key: str
    ) -> None:
        ask = [{"role": "user", "content": ASK}]
        first = await direct(system, ask, tools=CHAT_TOOLS)
        assert first.choices[0].finish_reason == "tool_calls"
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in first.choices[0].message.tool_calls
        ]
        assert [c["name"] for c in calls] == ["get_weather", "get_time"]

        async with client(system.gateway_url, key) as c:
            events = [
                e
                async for e in await c.responses.create(
                    model="small",
                    input=ASK,
                    tools=RESPONSES_TOOLS,
                    stream=True,  # type: ignore[arg-type]
                )
            ]
            whole = await c.responses.create(model="small", input=ASK, tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
        assert_numbered(events)
        final = events[-1].response
        assert events[-1].type == "response.completed" and final.status == "completed"
        assert _call_items(final.output) == calls
        assert _call_items(whole.output) == calls
        assert final.usage is not None
        assert final.usage.output_tokens == first.usage.completion_tokens
        for item in final.output:
            pieces = [
                e.delta
                for e in events
                if e.type == "response.function_call_arguments.delta" and e.item_id == item.id
            ]
            assert pieces and "".join(pieces) == item.arguments
            [done] = [
                e
                for e in events
                if e.type == "response.function_call_arguments.done" and e.item_id == item.id
            ]
            assert done.arguments == item.arguments
            assert item.status == "completed"

        results = ['{"temp_c": 4}', '{"time": "14:05"}']
        history = [
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                    for call in calls
                ],
            },
            *(
                {"role": "tool", "tool_call_id": call["id"], "content": result}
                for call, result in zip(calls, results, strict=True)
            ),
        ]
        answer = await direct(system, history, tools=CHAT_TOOLS)
        items: list[dict[str, Any]] = [
            {"role": "user", "content": ASK},
            *(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["name"],
                    "arguments": call["arguments"],
                }
                for call in calls
            ),
            *(
                {"type": "function_call_output", "call_id": call["id"], "output": result}
                for call, result in zip(calls, results, strict=True)
            ),
        ]
        async with client(system.gateways[1].url, key) as c:
            follow_up = await c.responses.create(
                model="small",
                input=items,
                tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
            )
        text = answer.choices[0].message.content
        assert text and follow_up.output_text == text
        assert follow_up.status == "completed"


class TestTenants:
    async def test_another_tenant_s_response_id_is_a_404_everywhere(
        self, system: System, key: str, other_key: str
    ) -> None:
        async with client(system.gateway_url, key) as mine:
            response = await mine.responses.create(model="small", input="Hi", max_output_tokens=3)
        rid = response.id
        missing = rid[:-1] + ("0" if rid[-1] != "0" else "1")
        calls = [
            ("GET", ""),
            ("GET", "?stream=true"),
            ("GET", "?stream=true&starting_after=2"),
            ("POST", "/cancel"),
            ("DELETE", ""),
            ("GET", "/input_items"),
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for node in system.gateways:
                for method, tail in calls:
                    theirs = await http.request(
                        method,
                        f"{node.url}/v1/responses/{rid}{tail}",
                        headers=auth(other_key),
                    )
                    nothing = await http.request(
                        method,
                        f"{node.url}/v1/responses/{missing}{tail}",
                        headers=auth(other_key),
                    )
                    assert theirs.status_code == nothing.status_code == 404, (method, tail)
                    assert theirs.json()["error"]["code"] == "not_found"
                    assert theirs.text.replace(rid, "ID") == nothing.text.replace(missing, "ID")
        async with client(system.gateways[1].url, other_key) as theirs_sdk:
            with pytest.raises(openai.NotFoundError):
                await theirs_sdk.responses.retrieve(rid)
            with pytest.raises(openai.NotFoundError):
                await theirs_sdk.responses.cancel(rid)
            with pytest.raises(openai.NotFoundError):
                await theirs_sdk.responses.delete(rid)
        async with client(system.gateways[1].url, key) as mine:  # still there, untouched
            assert (await mine.responses.retrieve(rid)).model_dump() == response.model_dump()


def _requests(system: System) -> str:
    return TOPICS.with_prefix(system.prefix).requests.name


BAD: dict[str, tuple[dict[str, Any], str | None]] = {
    "unknown item type": (
        {"model": "small", "input": [{"type": "banana"}]},
        "input.0.type",
    ),
    "unknown tool type": (
        {"model": "small", "input": "hi", "tools": [{"type": "web_search"}]},
        "tools.0",
    ),
    "conversation and previous_response_id": (
        {
            "model": "small",
            "input": "hi",
            "conversation": "conv_123",
            "previous_response_id": "resp_123",
        },
        "conversation",
    ),
    "unknown top-level field": (
        {"model": "small", "input": "hi", "frobnicate": True},
        "frobnicate",
    ),
}


class TestBadInput:
    async def test_bad_input_is_a_400_in_openai_shape_and_queues_nothing(
        self, system: System, key: str
    ) -> None:
        async with (
            record_events(system.bootstrap, _requests(system), expect=0),
            httpx.AsyncClient(timeout=30) as http,
        ):
            for i, (name, (body, param)) in enumerate(BAD.items()):
                for stream in (False, True):
                    node = system.gateways[i % 2].url
                    resp = await http.post(
                        f"{node}/v1/responses", json={**body, "stream": stream}, headers=auth(key)
                    )
                    assert resp.status_code == 400, (name, resp.text)
                    error = resp.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, name
                    assert error["type"] == "invalid_request_error", name
                    assert error["message"] and error["code"], name
                    assert error["param"] == param, (name, error)
            async with client(system.gateway_url, key) as c:
                with pytest.raises(openai.BadRequestError):
                    await c.responses.create(
                        model="small",
                        input="hi",
                        tools=[{"type": "web_search"}],  # type: ignore[list-item]
                    )


class TestStoredItems:
    async def test_input_items_are_listed_and_a_deleted_response_is_gone(
        self, system: System, key: str
    ) -> None:
        items: list[dict[str, Any]] = [
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi. How can I help?"},
            {"role": "user", "content": [{"type": "input_text", "text": "Count to three."}]},
        ]
        async with client(system.gateway_url, key) as a:
            response = await a.responses.create(
                model="small",
                input=items,
                max_output_tokens=3,  # type: ignore[arg-type]
            )
            rid = response.id
            newest_first = await a.responses.input_items.list(rid)
            oldest_first = await a.responses.input_items.list(rid, order="asc")
        listed = oldest_first.data
        assert [item.model_dump() for item in newest_first.data] == [
            item.model_dump() for item in reversed(listed)
        ]
        assert [(i.type, i.role) for i in listed] == [  # type: ignore[union-attr]
            ("message", "user"),
            ("message", "assistant"),
            ("message", "user"),
        ]
        texts = [[part.text for part in i.content] for i in listed]  # type: ignore[union-attr]
        assert texts == [["Hello there."], ["Hi. How can I help?"], ["Count to three."]]
        assert [p.type for i in listed for p in i.content] == [  # type: ignore[union-attr]
            "input_text",
            "output_text",
            "input_text",
        ]
        assert len({i.id for i in listed}) == 3
        assert oldest_first.has_more is False

        async with client(system.gateways[1].url, key) as b:
            page = await b.responses.input_items.list(rid, order="asc", limit=2)
            assert [i.id for i in page.data] == [i.id for i in listed[:2]]
            assert page.has_more is True
            async with httpx.AsyncClient(timeout=30) as http:
                deleted = await http.delete(
                    f"{system.gateways[1].url}/v1/responses/{rid}", headers=auth(key)
                )
            assert deleted.status_code == 200
            assert deleted.json() == {"id": rid, "object": "response.deleted", "deleted": True}
            for node in system.gateways:
                async with client(node.url, key) as c:
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.retrieve(rid)
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.input_items.list(rid)
                    with pytest.raises(openai.NotFoundError):
                        await c.responses.delete(rid)
