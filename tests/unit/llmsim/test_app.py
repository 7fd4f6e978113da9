"""llmsim's HTTP API over an in-memory transport: wire format, errors, stats and pace."""

import json
import time
from typing import Any

import httpx
import pytest

from services.llmsim import answer_tokens, create_app
from services.llmsim.text import count_prompt_tokens

from .conftest import fast_settings

MESSAGES = [{"role": "user", "content": "Tell me about Kafka"}]


def _frames(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    return raw[:-2].split(b"\n\n")


def _chunks(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(f.removeprefix(b"data: ")) for f in _frames(raw)[:-1]]


async def test_stream_byte_framing(client: httpx.AsyncClient) -> None:
    body = {"model": "llmsim-small", "messages": MESSAGES, "stream": True, "max_tokens": 4}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    raw = response.content
    assert raw.startswith(b"data: {")
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    assert b"\r" not in raw
    frames = _frames(raw)
    assert all(f.startswith(b"data: ") and b"\n" not in f for f in frames)
    assert len(frames) == 1 + 4 + 1 + 1  # role, tokens, finish, [DONE]


async def test_stream_chunks(client: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    chunks = _chunks((await client.post("/v1/chat/completions", json=body)).content)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert all("usage" not in c for c in chunks)  # only when include_usage is asked for
    assert chunks[0]["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-1])
    assert text == "".join(answer_tokens(MESSAGES, None, 64))
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_usage_chunk(client: httpx.AsyncClient) -> None:
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "max_completion_tokens": 3,
        "stream_options": {"include_usage": True},
    }
    chunks = _chunks((await client.post("/v1/chat/completions", json=body)).content)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    prompt = count_prompt_tokens(MESSAGES)
    assert chunks[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 3,
        "total_tokens": prompt + 3,
    }


async def test_non_stream_completion(client: httpx.AsyncClient) -> None:
    body = {"model": "llmsim-large", "messages": MESSAGES, "temperature": 0.3, "n": 1}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "llmsim-large"
    assert isinstance(completion["created"], int)
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "".join(answer_tokens(MESSAGES, None, 64))
    assert choice["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 64


async def test_answer_ignores_model_name(client: httpx.AsyncClient) -> None:
    texts = set()
    for model in ("llmsim-small", "llmsim-large", "anything"):
        body = {"model": model, "messages": MESSAGES}
        completion = (await client.post("/v1/chat/completions", json=body)).json()
        texts.add(completion["choices"][0]["message"]["content"])
    assert len(texts) == 1


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b'{"model": "m", "messages": []}', "messages", "empty_array"),
        (b'{"model": "m", "messages": [', None, None),
        (b"not json", None, None),
        (b'{"model": "m", "messages": "hi"}', "messages", "invalid_type"),
        (
            b'{"model": "m", "messages": [{"content": "hi"}]}',
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user"}], "stream": "often"}',
            "stream",
            "invalid_type",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}',
            "max_tokens",
            "integer_below_min_value",
        ),
        (b'{"messages": [{"role": "user"}]}', "model", "missing_required_parameter"),
        (b"[1, 2]", None, None),
        (b"", None, None),
    ],
)
async def test_invalid_requests_get_openai_400(
    client: httpx.AsyncClient, body: bytes, param: str | None, code: str | None
) -> None:
    response = await client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert (error["param"], error["code"]) == (param, code)


async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["llmsim-small", "llmsim-large"]
    assert all(m["object"] == "model" and m["owned_by"] == "llmsim" for m in models["data"])
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200


async def test_stats_and_metrics(client: httpx.AsyncClient) -> None:
    await client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 5},
    )
    await client.post(
        "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "max_tokens": 2}
    )
    stats = (await client.get("/stats")).json()
    assert stats == {
        "open_streams": 0,
        "peak_open_streams": 1,
        "requests_total": 2,
        "streams_total": 1,
        "streams_completed": 1,
        "streams_closed_early": 0,
        "tokens_total": 7,
        "faults_injected": 0,
        "requests_by_model": {"m": 2},
        "open_streams_by_model": {"m": 0},
        "peak_open_streams_by_model": {"m": 1},
    }
    metrics = (await client.get("/metrics")).text
    assert "llmsim_tokens_total 7.0" in metrics
    assert "llmsim_open_streams 0.0" in metrics
    reset = (await client.post("/stats/reset")).json()
    assert all(v in (0, {}) for v in reset.values())  # counters zeroed, per-model maps emptied


async def test_stream_is_paced() -> None:
    app = create_app(fast_settings(ttft_ms=50, tokens_per_second=100))
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmsim") as client:
        body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 10}
        started = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert elapsed >= 0.05 + 9 / 100 - 0.005  # ttft, then 9 intervals between 10 tokens
