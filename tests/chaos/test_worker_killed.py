"""A worker SIGKILLed with 50 streams in flight, on the real broker: requests it had not
answered yet finish whole on the other worker; those it was answering end with the retryable
`worker_lost` once the group hands their partitions over (within the session timeout plus the
other worker's turn), never cut short silently; usage holds exactly one record per request."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import TOPICS, UsageRecorded
from tests.e2e.helpers import direct_texts, eventually, llmsim_stats
from tests.e2e.sse import Frame, chat_text, iter_frames, stream_error
from tests.kafka_records import read_topic
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

STREAMS = 50
TOKENS = 40  # 2 s at 20 tokens/s
SESSION_TIMEOUT_S = 6
# Bound on a cut stream's end: the group notices the loss (session timeout), hands the
# partitions over, and the other worker takes the request up when it has a free slot.
BOUND_S = SESSION_TIMEOUT_S + 20


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="wkill",
        workers=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "300", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "20"},
        worker_env={
            "TOKENBUS_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_S * 1000),
            "TOKENBUS_MAX_CONCURRENCY": "20",  # 40 at once: the rest wait in their partitions
        },
    ) as sys_:
        yield sys_


def _body(n: int) -> dict[str, Any]:
    return {
        "model": "small",
        "messages": [{"role": "user", "content": f"Crash question {n}"}],
        "max_tokens": TOKENS,
        "stream": True,
    }


async def _stream(url: str, body: dict[str, Any]) -> tuple[str, list[Frame], float]:
    frames: list[Frame] = []
    async with (
        httpx.AsyncClient(timeout=180) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        request_id = resp.headers["x-request-id"]
        async for frame in iter_frames(resp):
            frames.append(frame)
    return request_id, frames, time.monotonic()


async def test_a_worker_killed_under_load_loses_no_request_and_usage_stays_exact(
    system: System,
) -> None:
    bodies = [_body(n) for n in range(STREAMS)]
    streams = [asyncio.create_task(_stream(system.gateway_url, b)) for b in bodies]

    async def both_busy() -> bool:
        return (await llmsim_stats(system.llmsim_url))["open_streams"] >= 30

    await eventually(both_busy, within=30)
    await asyncio.sleep(0.5)  # mid-answer: text is out for the streams now running
    system.workers[0].kill()
    killed_at = time.monotonic()

    results = await asyncio.wait_for(asyncio.gather(*streams), 180)
    whole = lost = 0
    texts = await direct_texts(system.llmsim_url, bodies)
    for expected, (request_id, frames, ended_at) in zip(texts, results, strict=True):
        error = stream_error(frames)
        if error is None:
            assert chat_text(frames) == expected, request_id
            assert frames[-1] == (None, "[DONE]")
            whole += 1
            continue
        # Cut after text: said so, retryable, and what came before is a true prefix.
        assert error["code"] == "worker_lost", (request_id, error)
        assert expected.startswith(chat_text(frames)) and chat_text(frames), request_id
        assert ended_at - killed_at < BOUND_S, request_id
        lost += 1
    assert lost >= 1 and whole >= 1, (whole, lost)  # the kill did land mid-answer

    # Usage: exactly one record per request, once the system is quiet.
    async def idle() -> bool:
        return (await llmsim_stats(system.llmsim_url))["open_streams"] == 0

    await eventually(idle, within=60)
    request_ids = {request_id for request_id, _, _ in results}
    topic = TOPICS.with_prefix(system.prefix).usage.name

    def all_there(records: list[Any]) -> bool:
        seen = {UsageRecorded.model_validate_json(r.value).request_id for r in records}
        return request_ids <= seen

    records = await read_topic(system.bootstrap, topic, until=all_there, timeout_s=60)
    usages = [UsageRecorded.model_validate_json(r.value) for r in records]
    per_request = [u.request_id for u in usages if u.request_id in request_ids]
    assert sorted(per_request) == sorted(request_ids)  # one each, none twice
    assert {u.status for u in usages} <= {"ok", "failed"}
    print(f"worker killed: {whole} whole, {lost} worker_lost")
