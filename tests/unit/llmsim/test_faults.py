"""llmsim's injected faults and per-model speed profiles, in memory and under real uvicorn."""

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from services.llmsim import LlmsimSettings, answer_tokens, create_app
from services.llmsim.faults import FaultSpecError, parse_fault

from .conftest import fast_settings, serve

MESSAGES = [{"role": "user", "content": "Tell me about Kafka"}]
URL = "/v1/chat/completions"


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **extra}


def _fault(spec: str, key: str | None = None) -> dict[str, str]:
    return {"x-llmsim-fault": spec} | ({"x-llmsim-fault-key": key} if key else {})


def test_parse_normalises_and_converts() -> None:
    fault = parse_fault(" stall : 2000 ; after:5;slow_first_token:150 ")
    assert (fault.spec, fault.stall, fault.stall_after, fault.ttft) == (
        "stall:2000;after:5;slow_first_token:150",
        2.0,
        5,
        0.15,
    )
    assert parse_fault("fail_times:2;status:503").fail_times == 2
    assert not parse_fault("").active and not parse_fault("none").active


@pytest.mark.parametrize(
    "spec",
    [
        "explode",
        "status",
        "status:200",
        "status:5x",
        "stall:-1",
        "drop_after:1.5",
        "error_before_first_token:1",
        "status:500;drop_after:2",
        "after:3",
        "retry_after:1",
        "fail_times:2",
        "stall:1;stall:2",
        "stall:nan",
    ],
)
def test_parse_refuses(spec: str) -> None:
    with pytest.raises(FaultSpecError):
        parse_fault(spec)


def test_invalid_default_fault_is_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match="invalid fault spec"):
        LlmsimSettings(fault="stall")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "kind", "code", "retry_after"),
    [
        (429, "requests", "rate_limit_exceeded", "0"),
        (500, "server_error", None, None),
        (503, "server_error", None, "0"),
    ],
)
async def test_status_fault(
    client: httpx.AsyncClient,
    stream: bool,
    status: int,
    kind: str,
    code: str | None,
    retry_after: str | None,
) -> None:
    response = await client.post(URL, json=_body(stream=stream), headers=_fault(f"status:{status}"))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (kind, code, None)
    assert response.headers.get("retry-after") == retry_after
    assert response.headers["x-llmsim-fault-injected"] == f"status:{status}"
    stats = (await client.get("/stats")).json()
    assert (stats["faults_injected"], stats["requests_total"], stats["streams_total"]) == (1, 1, 0)


async def test_fault_from_metadata_and_retry_after(client: httpx.AsyncClient) -> None:
    metadata = {"llmsim_fault": "status:429;retry_after:2.5", "user": "kept"}
    response = await client.post(URL, json=_body(metadata=metadata))
    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("2.5", "2500")


@pytest.mark.parametrize(
    ("headers", "metadata", "param"),
    [
        (_fault("stall"), None, None),
        ({}, {"llmsim_fault": "drop_after:x"}, "metadata.llmsim_fault"),
        ({}, {"llmsim_fault": 3}, "metadata.llmsim_fault"),
    ],
)
async def test_invalid_fault_gets_openai_400(
    client: httpx.AsyncClient, headers: dict[str, str], metadata: Any, param: str | None
) -> None:
    response = await client.post(URL, json=_body(metadata=metadata), headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_value",
        param,
    )
    assert "llmsim fault" in error["message"]


async def test_default_fault_and_per_request_override() -> None:
    app = create_app(fast_settings(fault="status:503"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as client:
        assert (await client.post(URL, json=_body())).status_code == 503
        assert (await client.post(URL, json=_body(), headers=_fault("none"))).status_code == 200
        assert (
            await client.post(URL, json=_body(), headers=_fault("status:429"))
        ).status_code == 429


async def test_fail_times_counts_per_key(client: httpx.AsyncClient) -> None:
    async def status(key: str | None = None, metadata: dict[str, str] | None = None) -> int:
        headers = _fault("fail_times:2;status:503", key) if metadata is None else {}
        return (await client.post(URL, json=_body(metadata=metadata), headers=headers)).status_code

    assert [await status("a"), await status("a"), await status("a")] == [503, 503, 200]
    assert [await status("b"), await status("a")] == [503, 200]
    meta = {"llmsim_fault": "fail_times:1;status:500", "llmsim_fault_key": "c"}
    assert [await status(metadata=meta), await status(metadata=meta)] == [500, 200]
    assert [await status(), await status(), await status()] == [503, 503, 200]  # key = the spec
    assert (await client.get("/stats")).json()["faults_injected"] == 6


async def test_error_before_first_token_without_stream_is_500(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=_body(), headers=_fault("error_before_first_token"))
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"


async def test_stats_per_model() -> None:
    app = create_app(fast_settings(tokens_per_second=200))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as client:
        posts = [
            client.post(URL, json=_body(model=model, stream=True, max_tokens=10))
            for model in ("a", "a", "b")
        ]
        await asyncio.gather(*posts, client.post(URL, json=_body(model="c")))
        stats = (await client.get("/stats")).json()
    assert stats["requests_by_model"] == {"a": 2, "b": 1, "c": 1}
    assert stats["peak_open_streams_by_model"] == {"a": 2, "b": 1}
    assert stats["open_streams_by_model"] == {"a": 0, "b": 0}
    assert stats["peak_open_streams"] == 3


async def _stream(url: str, model: str = "m", **kwargs: Any) -> tuple[list[tuple[float, Any]], Any]:
    """Chunks of one SDK stream with their arrival times, and the error that ended it, if any."""
    received: list[tuple[float, Any]] = []
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            **kwargs,
        )
        try:
            async for chunk in stream:
                received.append((time.perf_counter() - started, chunk))
        except openai.APIError as exc:
            return received, exc
    return received, None


def _text(received: list[tuple[float, Any]]) -> str:
    return "".join(c.choices[0].delta.content or "" for _, c in received if c.choices)


@pytest.mark.parametrize(("spec", "tokens"), [("drop_after:3", 3), ("error_before_first_token", 0)])
async def test_dropped_stream_raises_in_the_sdk(
    spec: str, tokens: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(create_app(fast_settings())) as url, httpx.AsyncClient(base_url=url) as http:
        received, error = await _stream(url, extra_headers=_fault(spec))
        stats = (await http.get("/stats")).json()
    # The SDK does not hand back a silently short answer: iterating raises once the
    # connection drops without the chunked body's end (a RemoteProtocolError of the SDK's
    # HTTP client, which is httpx2 in openai 2.x rather than httpx).
    assert isinstance(error, openai.APIConnectionError)
    assert type(error.__cause__).__name__ == "RemoteProtocolError"
    assert "incomplete chunked read" in str(error.__cause__)
    assert _text(received) == "".join(answer_tokens(MESSAGES, None, 64)[:tokens])
    assert len(received) == 1 + tokens  # the role chunk, then content, and no finish_reason
    assert all(c.choices[0].finish_reason is None for _, c in received)
    assert stats["streams_closed_early"] == 1 and stats["tokens_total"] == tokens
    assert stats["faults_injected"] == 1
    drops = [r for r in caplog.records if r.name == "uvicorn.error" and "dropped" in r.message]
    assert drops and drops[0].exc_info is None  # one line, not a traceback


async def test_dropped_completion_raises_in_the_sdk() -> None:
    async with (
        serve(create_app(fast_settings())) as url,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="m",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers=_fault("drop_after:3"),
            )


async def test_stall_then_the_rest_of_the_answer() -> None:
    async with serve(create_app(fast_settings())) as url:
        received, error = await _stream(url, extra_headers=_fault("stall:300;after:5"))
    assert error is None
    assert _text(received) == "".join(answer_tokens(MESSAGES, None, 64))
    times = [t for t, _ in received]  # [0] is the role chunk, [i] the content token i - 1
    assert times[6] - times[5] >= 0.28  # 300 ms, less what clock reads can shave off
    assert times[5] < 0.2 and times[-1] - times[6] < 0.2


async def test_slow_first_token_and_sdk_retries_fail_times() -> None:
    async with serve(create_app(fast_settings())) as url:
        received, _ = await _stream(url, metadata={"llmsim_fault": "slow_first_token:200"})
        assert received[1][0] >= 0.2
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=2) as client:
            completion = await client.chat.completions.create(
                model="m",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers=_fault("fail_times:2;status:503;retry_after:0.01", "retry-me"),
            )
            assert completion.choices[0].message.content
            with pytest.raises(openai.RateLimitError):
                await client.with_options(max_retries=0).chat.completions.create(
                    model="m",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    extra_headers=_fault("status:429"),
                )


def test_profiles_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TOKENBUS_LLMSIM_PROFILES", '{"llmsim-large": {"ttft_ms": 300, "tokens_per_second": 40}}'
    )
    profile = LlmsimSettings().profiles["llmsim-large"]
    assert (profile.ttft_ms, profile.tokens_per_second) == (300, 40)
    monkeypatch.delenv("TOKENBUS_LLMSIM_PROFILES")
    assert LlmsimSettings().profiles == {}  # by default every model keeps the global pace


async def test_profile_paces_its_model_only() -> None:
    profiles = {"llmsim-large": {"ttft_ms": 250, "tokens_per_second": 0}}
    async with serve(create_app(fast_settings(profiles=profiles))) as url:
        large, _ = await _stream(url, "llmsim-large", max_tokens=8)
        small, _ = await _stream(url, "llmsim-small", max_tokens=8)
    assert large[1][0] >= 0.25  # time to the first content token
    assert small[1][0] < 0.2
    assert _text(large) == _text(small) == "".join(answer_tokens(MESSAGES, 8, 64))


async def test_a_model_clause_limits_the_fault_to_that_model(client: httpx.AsyncClient) -> None:
    body = {"messages": MESSAGES, "metadata": {"llmsim_fault": "model:llmsim-small;status:503"}}
    hit = await client.post("/v1/chat/completions", json={**body, "model": "llmsim-small"})
    missed = await client.post("/v1/chat/completions", json={**body, "model": "llmsim-large"})
    assert hit.status_code == 503
    assert missed.status_code == 200
