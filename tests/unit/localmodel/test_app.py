"""localmodel's app in front of an OpenAI-compatible upstream (llmsim here, llama.cpp in
production): byte-for-byte relay, health, metrics, and closing the upstream on a hang-up."""

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from services.llmsim import LlmsimSettings, answer_tokens
from services.llmsim import create_app as llmsim_app
from services.localmodel import LocalModelSettings, create_app
from tests.fakes import eventually, serve

MESSAGES = [{"role": "user", "content": "What is a partition?"}]


@pytest.fixture
async def llmsim() -> AsyncIterator[str]:
    settings = LlmsimSettings(ttft_ms=0, tokens_per_second=200)  # type: ignore[call-arg]
    async with serve(llmsim_app(settings)) as url:
        yield url


@pytest.fixture
async def front(llmsim: str) -> AsyncIterator[str]:
    app = create_app(LocalModelSettings(model_alias="tiny"), upstream_url=llmsim)
    async with serve(app) as url:
        yield url
    await app.state.proxy.client.aclose()


async def _stats(llmsim: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{llmsim}/stats")).json()  # type: ignore[no-any-return]


async def test_a_stream_is_relayed_with_its_usage(front: str):
    async with openai.AsyncOpenAI(base_url=f"{front}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            max_tokens=12,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(answer_tokens(MESSAGES, 12, 64))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


async def test_the_raw_sse_bytes_are_unchanged(front: str, llmsim: str):
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 5}
    async with httpx.AsyncClient() as client:
        via = await client.post(f"{front}/v1/chat/completions", json=body)
        direct = await client.post(f"{llmsim}/v1/chat/completions", json=body)
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.headers["cache-control"] == "no-cache"

    def strip_ids(raw: str) -> list[str]:
        return [line.split('"created"')[0] for line in raw.split("\n")]  # id/created differ

    assert len(via.text.split("\n")) == len(direct.text.split("\n"))
    assert via.text.endswith("data: [DONE]\n\n")
    assert strip_ids(via.text)[-3:] == strip_ids(direct.text)[-3:]


async def test_tool_calls_pass_through_both_ways(front: str):
    tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}]
    async with openai.AsyncOpenAI(base_url=f"{front}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            tools=tools,  # type: ignore[list-item]
        )
        chunks = [chunk async for chunk in stream]
        call = chunks[1].choices[0].delta.tool_calls[0]  # type: ignore[index]
        assert call.function is not None and call.function.name == "now"
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        result = {"role": "tool", "tool_call_id": call.id, "content": "noon"}
        assistant = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        }
        messages = [*MESSAGES, assistant, result]
        answer = await sdk.chat.completions.create(
            model="tiny",
            messages=messages,  # type: ignore[arg-type]
            tools=tools,  # type: ignore[list-item]
            max_tokens=4,
        )
    assert answer.choices[0].message.content == "".join(answer_tokens(messages, 4, 64))


async def test_a_non_streamed_answer_and_an_upstream_error_pass_through(front: str):
    async with httpx.AsyncClient(base_url=front) as client:
        ok = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "max_tokens": 3}
        )
        bad = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    assert bad.status_code == 400 and "error" in bad.json()


async def test_a_client_hang_up_closes_the_upstream_stream(front: str, llmsim: str):
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 2000}
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{front}/v1/chat/completions", json=body) as resp,
    ):
        async for line in resp.aiter_lines():
            if '"content"' in line:
                break
        assert (await _stats(llmsim))["open_streams"] == 1

    async def upstream_closed() -> bool:
        stats = await _stats(llmsim)
        return stats["open_streams"] == 0 and stats["streams_closed_early"] == 1

    await eventually(upstream_closed, within=3.0)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{front}/metrics")).text
    assert "localmodel_streams_closed_early_total 1.0" in metrics
    assert "localmodel_open_streams 0.0" in metrics
    assert 'localmodel_requests_total{stream="true"} 1.0' in metrics


async def test_health_readiness_and_models(front: str):
    async with httpx.AsyncClient(base_url=front) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        models = (await client.get("/v1/models")).json()
    assert ready.status_code == 200 and ready.json()["checks"] == {"model": True}
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["object"] == "list" and models["data"][0]["object"] == "model"


async def test_not_ready_and_503_until_the_model_is_loaded():
    app = create_app(LocalModelSettings())  # no lifespan run here: the model never loads
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lm") as client:
        ready = await client.get("/readyz")
        chat = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert ready.status_code == 503 and ready.json()["checks"] == {"model": False}
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_loading"
    await app.state.proxy.client.aclose()


async def test_an_unreachable_upstream_is_a_502_in_openai_shape():
    app = create_app(LocalModelSettings(), upstream_url="http://127.0.0.1:1")
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lm") as client:
        resp = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        metrics = (await client.get("/metrics")).text
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_unreachable"
    assert "localmodel_upstream_errors_total 1.0" in metrics
    await app.state.proxy.client.aclose()
