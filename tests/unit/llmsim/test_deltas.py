"""Reasoning, refusal, logprobs and usage details where the openai SDK exposes them; the plain
text stream stays byte-for-byte what it was; OpenAI's request shape and its 400s."""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from services.llmsim import answer_tokens, create_app
from services.llmsim.text import count_prompt_tokens

from .conftest import fast_settings, serve

MESSAGES = [{"role": "user", "content": "Tell me about Kafka"}]
TEXT = "".join(answer_tokens(MESSAGES, None, 64))
URL = "/v1/chat/completions"


@pytest.fixture
async def sdk() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        serve(create_app(fast_settings())) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        yield client


async def _chunks(sdk: openai.AsyncOpenAI, **request: Any) -> list[Any]:
    stream = await sdk.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        **request,
    )
    return [chunk async for chunk in stream]


def _reasoning(delta_or_message: Any) -> Any:
    return (delta_or_message.model_extra or {}).get("reasoning_content")


def _fixed_ids(raw: str) -> str:
    """The stream with its random id and its clock time replaced by constants."""
    raw = re.sub(r'"id":"chatcmpl-[0-9a-f]{24}"', '"id":"chatcmpl-X"', raw)
    return re.sub(r'"created":\d+,', '"created":0,', raw)


async def test_the_plain_stream_is_byte_for_byte_unchanged(client: httpx.AsyncClient) -> None:
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
    }
    raw = _fixed_ids((await client.post(URL, json=body)).text)
    head = (
        'data: {"id":"chatcmpl-X","object":"chat.completion.chunk","created":0,"model":"m",'
        '"system_fingerprint":null,"choices":'
    )
    one, two = answer_tokens(MESSAGES, 2, 64)
    prompt = count_prompt_tokens(MESSAGES)
    frames = [
        '[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
        '"finish_reason":null}],"usage":null}',
        f'[{{"index":0,"delta":{{"content":"{one}"}},"logprobs":null,'
        '"finish_reason":null}],"usage":null}',
        f'[{{"index":0,"delta":{{"content":"{two}"}},"logprobs":null,'
        '"finish_reason":null}],"usage":null}',
        '[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"usage":null}',
        f'[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":2,'
        f'"total_tokens":{prompt + 2}}}}}',
    ]
    assert raw == "".join(head + frame + "\n\n" for frame in frames) + "data: [DONE]\n\n"
    # Parameters that ask for nothing llmsim simulates keep the same bytes.
    extra = {
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "none",
        "logprobs": False,
        "seed": 7,
        "user": "u",
        "response_format": {"type": "text"},
        "metadata": {"llmsim_reasoning": "0", "llmsim_refusal": "false", "team": "a"},
    }
    assert _fixed_ids((await client.post(URL, json={**body, **extra})).text) == raw


async def test_reasoning_streams_first_and_counts_in_usage(sdk: openai.AsyncOpenAI) -> None:
    chunks = await _chunks(sdk, metadata={"llmsim_reasoning": "3"})
    deltas = [c.choices[0].delta for c in chunks[1:-2]]
    reasoning = [_reasoning(d) for d in deltas[:3]]
    assert all(reasoning) and all(d.content is None for d in deltas[:3])
    assert all(_reasoning(d) is None for d in deltas[3:])
    assert "".join(d.content for d in deltas[3:]) == TEXT  # the answer itself is unchanged
    usage = chunks[-1].usage
    assert usage.completion_tokens == 3 + 64
    assert usage.completion_tokens_details.reasoning_tokens == 3
    completion = await sdk.chat.completions.create(
        model="m", messages=MESSAGES, metadata={"llmsim_reasoning": "3"}
    )
    assert _reasoning(completion.choices[0].message) == "".join(reasoning)
    assert completion.choices[0].message.content == TEXT
    assert completion.usage.completion_tokens_details.reasoning_tokens == 3


async def test_reasoning_then_tool_calls(sdk: openai.AsyncOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "now"}}]
    chunks = await _chunks(sdk, tools=tools, metadata={"llmsim_reasoning": "2"})
    deltas = [c.choices[0].delta for c in chunks[1:-2]]
    assert [bool(_reasoning(d)) for d in deltas] == [True, True, False, False]
    assert deltas[2].tool_calls[0].function.name == "now"
    assert deltas[3].tool_calls[0].function.arguments == "{}"
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.completion_tokens == 4


async def test_refusal_is_streamed_in_its_own_field(sdk: openai.AsyncOpenAI) -> None:
    metadata = {"llmsim_refusal": "true"}
    chunks = await _chunks(sdk, metadata=metadata)
    assert chunks[0].choices[0].delta.refusal == ""
    assert all(c.choices[0].delta.content is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks[:-1]) == TEXT
    assert chunks[-2].choices[0].finish_reason == "stop"
    completion = await sdk.chat.completions.create(model="m", messages=MESSAGES, metadata=metadata)
    message = completion.choices[0].message
    assert (message.content, message.refusal) == (None, TEXT)
    assert completion.choices[0].finish_reason == "stop"


async def test_logprobs_for_every_content_token(sdk: openai.AsyncOpenAI) -> None:
    chunks = await _chunks(sdk, logprobs=True, top_logprobs=3, max_tokens=5)
    entries = []
    for chunk in chunks[1:-2]:
        (entry,) = chunk.choices[0].logprobs.content
        assert entry.token == chunk.choices[0].delta.content
        assert entry.logprob < 0 and entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        entries.append(entry)
    assert chunks[1].choices[0].logprobs.refusal is None
    assert chunks[0].choices[0].logprobs is None and chunks[-2].choices[0].logprobs is None
    completion = await sdk.chat.completions.create(
        model="m", messages=MESSAGES, logprobs=True, top_logprobs=3, max_tokens=5
    )
    assert completion.choices[0].logprobs.content == entries  # deterministic
    plain = await sdk.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert plain.choices[0].logprobs is None
    no_top = await sdk.chat.completions.create(
        model="m", messages=MESSAGES, logprobs=True, max_tokens=1
    )
    assert no_top.choices[0].logprobs.content[0].top_logprobs == []


async def test_cached_tokens_appear_in_usage(sdk: openai.AsyncOpenAI) -> None:
    metadata = {"llmsim_cached_tokens": "5"}
    chunks = await _chunks(sdk, metadata=metadata)
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 5
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    completion = await sdk.chat.completions.create(model="m", messages=MESSAGES, metadata=metadata)
    assert completion.usage.prompt_tokens_details.cached_tokens == 5
    assert completion.usage.completion_tokens_details is None


async def test_openai_request_shape_is_accepted(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "Tell me about Kafka"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ]
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": parts}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "seed": 1,
        "user": "someone",
        "metadata": {"team": "a"},
        "parallel_tool_calls": True,
    }
    response = await client.post(URL, json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == TEXT


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),  # no tools
        ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].type", "invalid_value"),
        (
            {"tools": [{"type": "function", "function": {}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
            "invalid_value",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),  # without logprobs
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ({"parallel_tool_calls": "often"}, "parallel_tool_calls", "invalid_type"),
        ({"metadata": {"llmsim_reasoning": "many"}}, "metadata.llmsim_reasoning", "invalid_value"),
        ({"metadata": {"llmsim_reasoning": 3}}, "metadata.llmsim_reasoning", "invalid_value"),
        ({"metadata": {"llmsim_refusal": "yes"}}, "metadata.llmsim_refusal", "invalid_value"),
        (
            {"metadata": {"llmsim_cached_tokens": "-1"}},
            "metadata.llmsim_cached_tokens",
            "invalid_value",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
            "messages[0].tool_calls[0].function",
            "missing_required_parameter",
        ),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ],
)
async def test_invalid_values_get_openai_400(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str, code: str
) -> None:
    response = await client.post(URL, json={"model": "m", "messages": MESSAGES, **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
