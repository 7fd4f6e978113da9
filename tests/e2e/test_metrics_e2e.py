"""Metrics agree with what clients saw: traffic through a real system (two workers), then a
scrape of the gateway's and the workers' /metrics."""

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import Samples, complete, scrape, stream_text, total
from tests.fakes import eventually
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

STREAMED, PLAIN = 6, 3


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    # A system of its own: its counters hold this module's traffic and nothing else.
    with running_system(kafka_bootstrap, logs_dir, tag="m", workers=2) as sys_:
        yield sys_


async def test_histograms_count_the_requests_and_token_usage_sums_the_tokens_streamed(
    system: System,
) -> None:
    question = [{"role": "user", "content": "Count the metrics, please."}]
    streamed = await asyncio.gather(
        *(stream_text(system.gateway_url, question, model="small", max_tokens=8 + i)
          for i in range(STREAMED))
    )  # fmt: skip
    plain = await asyncio.gather(
        *(complete(system.gateway_url, question, model="small", max_tokens=5 + i)
          for i in range(PLAIN))
    )  # fmt: skip
    tokens = sum(u.completion_tokens for _, u, _ in streamed)
    tokens += sum(r.usage.completion_tokens for r in plain)
    assert tokens == sum(8 + i for i in range(STREAMED)) + sum(5 + i for i in range(PLAIN))
    requests = STREAMED + PLAIN

    gateway = await scrape(system.gateway_url)
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert total(gateway, ttft) == requests
    assert total(gateway, ttft, api="chat", tier="small", route="explicit") == requests
    duration = "gen_ai_server_request_duration_seconds_count"
    assert total(gateway, duration, error_type="") == requests
    # Every request here had more than one output token.
    assert total(gateway, "gen_ai_server_time_per_output_token_seconds_count") == requests
    assert total(gateway, "tokenbus_gateway_active_streams") == 0
    assert total(gateway, "tokenbus_gateway_client_disconnects_total") == 0
    # The token path's delivery latency: each request's started and terminal event, no more.
    assert total(gateway, "tokenbus_kafka_event_delivery_seconds_count") == 2 * requests

    # The usage record is made after the last event went out: wait for the workers' share.
    async def workers() -> list[Samples]:
        return [await scrape(w.url) for w in system.workers]

    usage = "gen_ai_client_token_usage_sum"
    scraped: list[Samples] = []

    async def recorded() -> bool:
        nonlocal scraped
        scraped = await workers()
        return sum(total(s, usage, gen_ai_token_type="output") for s in scraped) >= tokens

    with contextlib.suppress(TimeoutError):  # the assertions below say what was missing
        await eventually(recorded, within=10)
    assert sum(total(s, usage, gen_ai_token_type="output") for s in scraped) == tokens
    counted = sum(total(s, "gen_ai_client_token_usage_count", gen_ai_token_type="output")
                  for s in scraped)  # fmt: skip
    assert counted == requests
    routes = sum(total(s, "tokenbus_inference_routes_total", tier="small") for s in scraped)
    assert routes == requests
    assert sum(total(s, "tokenbus_inference_upstream_errors_total") for s in scraped) == 0


async def test_a_refusal_is_counted_by_status_and_code(system: System) -> None:
    body = {"model": "small", "messages": [], "stream": True}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{system.gateway_url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    code = response.json()["error"]["code"]
    gateway = await scrape(system.gateway_url)
    assert total(gateway, "tokenbus_gateway_http_errors_total", status="400", code=code) == 1


async def test_consumer_lag_is_shown_per_partition_and_drains_to_zero(system: System) -> None:
    question = [{"role": "user", "content": "Lag, please."}]
    await asyncio.gather(
        *(stream_text(system.gateway_url, question, model="small", max_tokens=6) for _ in range(4))
    )
    requests_topic, tokens_topic = f"{system.prefix}llm.requests", f"{system.prefix}llm.tokens"
    lag = "tokenbus_kafka_consumer_lag"
    scraped: list[Samples] = []

    def series(samples: Samples, topic: str) -> dict[str, float]:
        return {
            dict(labels)["partition"]: v
            for (n, labels), v in samples.items()
            if n == lag and dict(labels)["topic"] == topic
        }

    async def settled() -> bool:
        nonlocal scraped
        scraped = [await scrape(w.url) for w in system.workers] + [await scrape(system.gateway_url)]
        held = [series(s, requests_topic) for s in scraped[:-1]]
        replies = series(scraped[-1], tokens_topic)
        every = {p for h in held for p in h}
        return (
            len(every) == 12  # the workers hold all of llm.requests between them
            and len(replies) == 4  # the only gateway reads all 4 reply partitions
            and all(v == 0 for h in held for v in h.values())
            and all(v == 0 for v in replies.values())
        )

    with contextlib.suppress(TimeoutError):  # the assertion below shows what was seen
        await eventually(settled, within=20)
    assert await settled(), scraped and [series(s, requests_topic) for s in scraped]
