"""llmsim's tool calls through the openai SDK: deterministic, schema-valid, OpenAI-shaped."""

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from services.llmsim import answer_tokens, create_app
from services.llmsim.request import FunctionDefinition
from services.llmsim.tools import tool_calls

from .conftest import fast_settings, serve

QUESTION = [{"role": "user", "content": "What is the weather in Paris, and the time?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "A city name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
        "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
            "required": ["lat", "lon"],
        },
        "note": {"type": ["string", "null"]},
    },
    "required": ["city", "unit"],
}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "ping", "strict": False}},  # no parameters
]


_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": int | float,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "boolean" or isinstance(value, bool):  # a bool is an int to Python, not to JSON
        return kind == "boolean" and isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    """The few JSON-schema rules the schemas here use, checked by hand (no extra dependency)."""
    kinds = schema.get("type", [*_TYPES, "boolean"])
    if not any(_is(value, kind) for kind in (kinds if isinstance(kinds, list) else [kinds])):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            return False
    if isinstance(value, list):
        return bool(value) and all(_valid(v, schema.get("items", {})) for v in value)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return set(schema.get("required", ())) <= value.keys() <= properties.keys() and all(
            _valid(v, properties[k]) for k, v in value.items()
        )
    return True


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        serve(create_app(fast_settings())) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk,
    ):
        yield sdk


async def _streamed(client: openai.AsyncOpenAI, **request: Any) -> tuple[list[Any], Any]:
    """The tool calls assembled from the stream's fragments, as a client does; the last chunk."""
    stream = await client.chat.completions.create(
        model="m", stream=True, stream_options={"include_usage": True}, **request
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content is None
    calls: list[dict[str, Any]] = []
    for chunk in chunks[1:-2]:
        (delta_call,) = chunk.choices[0].delta.tool_calls
        if delta_call.id is not None:  # a call's first chunk: id, type and name
            assert delta_call.index == len(calls)
            assert delta_call.type == "function" and delta_call.function.arguments == ""
            calls.append({"id": delta_call.id, "name": delta_call.function.name, "args": ""})
        else:
            assert delta_call.function.name is None
            assert 1 <= len(delta_call.function.arguments) <= 8
            calls[delta_call.index]["args"] += delta_call.function.arguments
    assert chunks[-2].choices[0].delta.tool_calls is None
    return calls, chunks


def _calls(completion: Any) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "name": c.function.name, "args": c.function.arguments}
        for c in completion.choices[0].message.tool_calls
    ]


async def test_streamed_calls_equal_the_non_streamed_and_are_deterministic(
    client: openai.AsyncOpenAI,
) -> None:
    streamed, chunks = await _streamed(client, messages=QUESTION, tools=TOOLS)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    completion = await client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None and message.refusal is None
    assert _calls(completion) == streamed
    assert [c["name"] for c in streamed] == ["get_weather", "get_time", "ping"]
    assert all(c["id"].startswith("call_") and len(c["id"]) == 5 + 24 for c in streamed)
    assert len({c["id"] for c in streamed}) == 3
    again = await client.chat.completions.create(model="other", messages=QUESTION, tools=TOOLS)
    assert _calls(again) == streamed  # same conversation, same calls and ids
    # Usage: one token per call's opening chunk, one per argument fragment.
    assert (
        chunks[-1].usage.completion_tokens == len(chunks) - 3 == completion.usage.completion_tokens
    )
    other = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Something else"}], tools=TOOLS
    )
    assert [c["id"] for c in _calls(other)] != [c["id"] for c in streamed]


async def test_arguments_are_compact_json_valid_for_the_schema(
    client: openai.AsyncOpenAI,
) -> None:
    completion = await client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS)
    weather, time, ping = _calls(completion)
    arguments = json.loads(weather["args"])
    assert weather["args"] == json.dumps(arguments, separators=(",", ":"))
    assert list(arguments) == list(WEATHER["properties"])  # every property, in order
    assert _valid(arguments, WEATHER), arguments
    assert json.loads(time["args"]) == {} and ping["args"] == "{}"


def test_arguments_follow_each_schema_rule() -> None:
    schemas: list[dict[str, Any]] = [
        WEATHER,
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 40}}},
        {"type": "object", "properties": {"n": {"type": "number", "maximum": -3}}},
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": [7]}}}},
        {
            "type": "object",
            "properties": {"point": {"$ref": "#/$defs/Point"}},
            "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        },
    ]
    for i, schema in enumerate(schemas):
        for seed in range(20):
            (call,) = tool_calls([FunctionDefinition(name="f", parameters=schema)], bytes([seed]))
            value = json.loads(call.arguments)
            assert "".join(call.fragments) == call.arguments
            assert all(1 <= len(f) <= 8 for f in call.fragments)
            if i < 4:
                assert _valid(value, schema), (schema, value)
            else:
                assert isinstance(value["point"]["x"], int)


async def test_parallel_tool_calls_false_calls_only_the_first(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, parallel_tool_calls=False
    )
    assert [c["name"] for c in _calls(completion)] == ["get_weather"]
    many = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(6)]
    completion = await client.chat.completions.create(model="m", messages=QUESTION, tools=many)
    assert [c["name"] for c in _calls(completion)] == ["t0", "t1", "t2", "t3"]  # capped at 4


async def test_a_named_tool_choice_calls_just_that_tool(client: openai.AsyncOpenAI) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    streamed, _ = await _streamed(client, messages=QUESTION, tools=TOOLS, tool_choice=choice)
    assert [c["name"] for c in streamed] == ["get_time"]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="m",
            messages=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert (caught.value.code, caught.value.param) == ("invalid_value", "tool_choice")


async def test_tool_choice_none_answers_in_text(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, tool_choice="none"
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content == "".join(answer_tokens(QUESTION, None, 64))
    assert completion.choices[0].finish_reason == "stop"


async def test_max_tokens_cuts_the_calls_with_length(client: openai.AsyncOpenAI) -> None:
    full = _calls(await client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS))
    streamed, chunks = await _streamed(client, messages=QUESTION, tools=TOOLS, max_tokens=3)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 3
    cut = await client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, max_tokens=3
    )
    assert cut.choices[0].finish_reason == "length"
    assert _calls(cut) == streamed
    assert len(streamed) == 1 and full[0]["args"].startswith(streamed[0]["args"])


def _follow_up(calls: list[dict[str, Any]], results: list[str]) -> list[dict[str, Any]]:
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["args"]},
            }
            for c in calls
        ],
    }
    tool_messages = [
        {"role": "tool", "tool_call_id": c["id"], "content": result}
        for c, result in zip(calls, results, strict=True)
    ]
    return [*QUESTION, assistant, *tool_messages]


async def test_tool_results_get_a_text_answer_that_depends_on_them(
    client: openai.AsyncOpenAI,
) -> None:
    calls = _calls(await client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS))
    answers = []
    for results in (["sunny", "12:00", "pong"], ["rain", "12:00", "pong"]):
        messages = _follow_up(calls, results)
        completion = await client.chat.completions.create(
            model="m", messages=messages, tools=TOOLS, stream=False
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop" and choice.message.tool_calls is None
        assert choice.message.content == "".join(answer_tokens(messages, None, 64))
        assert completion.usage.prompt_tokens > 3 * len(messages)  # null content counts as 0
        answers.append(choice.message.content)
    assert answers[0] != answers[1]
