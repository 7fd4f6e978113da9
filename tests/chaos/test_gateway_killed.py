"""A gateway node SIGKILLed with streams open, on the real broker: clients that come back on
the other node with `Last-Event-ID` get the whole text; the generations of clients that never
come back (streamed or not) are cancelled once the workers miss the dead node (its silence)
and its grace period has run; usage holds exactly one record per request."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import TOPICS, UsageRecorded
from tests.e2e.helpers import direct_texts, eventually, llmsim_stats
from tests.e2e.sse import Frame, chat_text, iter_frames, last_id
from tests.kafka_records import read_topic
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

RETURNING = 4  # streams whose clients resume on the other node
ABANDONED = 4  # streams whose clients never come back
SILENT = 2  # non-streamed requests whose clients die with the node
TOKENS = 400  # 8 s at 50 tokens/s: all still running when the node dies
ALIVE_S = 0.5
SILENCE_S = 3.0
GRACE_S = 2.0


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="gkill",
        gateways=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "50", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "50"},
        gateway_env={
            "TOKENBUS_NODE_ALIVE_S": str(ALIVE_S),
            "TOKENBUS_DISCONNECT_GRACE_S": str(GRACE_S),
        },
        worker_env={"TOKENBUS_GATEWAY_SILENCE_S": str(SILENCE_S)},
    ) as sys_:
        yield sys_


def _body(n: int, stream: bool = True) -> dict[str, Any]:
    return {
        "model": "small",
        "messages": [{"role": "user", "content": f"Dead node question {n}"}],
        "max_tokens": TOKENS,
        "stream": stream,
    }


async def _until_cut(
    url: str, body: dict[str, Any], request_ids: list[str], started: asyncio.Event
) -> list[Frame]:
    """Stream `body` until the node dies under it; the frames read by then. A non-streamed
    answer comes whole at the end, so it is started at once (and has no id to resume)."""
    frames: list[Frame] = []
    if not body["stream"]:
        started.set()
    with pytest.raises(httpx.TransportError):  # the node is gone: no clean end
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
        ):
            assert resp.status_code == 200, await resp.aread()
            request_ids.append(resp.headers["x-request-id"])
            async for frame in iter_frames(resp):
                frames.append(frame)
                if len(frames) >= 3:
                    started.set()
    return frames


async def _resume(url: str, request_id: str, after: int) -> list[Frame]:
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream(
            "GET", f"{url}/v1/streams/{request_id}", headers={"last-event-id": str(after)}
        ) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        return [frame async for frame in iter_frames(resp)]


async def test_a_killed_gateway_loses_no_text_and_cancels_clients_that_never_return(
    system: System,
) -> None:
    node_a, node_b = system.gateways
    bodies = [_body(n) for n in range(RETURNING + ABANDONED)]
    bodies += [_body(100 + n, stream=False) for n in range(SILENT)]
    ids: list[list[str]] = [[] for _ in bodies]
    started = [asyncio.Event() for _ in bodies]
    cut = [
        asyncio.create_task(_until_cut(node_a.url, body, ids[n], started[n]))
        for n, body in enumerate(bodies)
    ]

    async def all_started() -> bool:
        return all(event.is_set() for event in started)

    async def all_generating() -> bool:
        return (await llmsim_stats(system.llmsim_url))["open_streams"] >= len(bodies)

    await eventually(all_started, within=30)
    await eventually(all_generating, within=30)
    node_a.kill()
    heads = await asyncio.wait_for(asyncio.gather(*cut), 30)
    request_ids = [got[0] for got in ids[: RETURNING + ABANDONED]]

    # The returning clients: the rest on the other node, from where they were (the texts
    # llmsim gives directly come meanwhile, at its pace).
    resumes = [_resume(node_b.url, request_ids[n], last_id(heads[n])) for n in range(RETURNING)]
    tails, expected = await asyncio.gather(
        asyncio.gather(*resumes), direct_texts(system.llmsim_url, bodies[:RETURNING])
    )
    for n in range(RETURNING):
        assert chat_text(heads[n] + tails[n]) == expected[n], request_ids[n]
        assert tails[n][-1] == (None, "[DONE]")

    # Usage (this system's topic holds only this test's requests): one record each; the
    # returners whole, the others cancelled, before their natural end.
    topic = TOPICS.with_prefix(system.prefix).usage.name

    def all_there(records: list[Any]) -> bool:
        seen = {UsageRecorded.model_validate_json(r.value).request_id for r in records}
        return set(request_ids) <= seen and len(seen) >= len(bodies)

    records = await read_topic(system.bootstrap, topic, until=all_there, timeout_s=60)
    usages = [UsageRecorded.model_validate_json(r.value) for r in records]
    assert len(usages) == len({u.request_id for u in usages}) == len(bodies)  # once each
    for usage in usages:
        if usage.request_id in request_ids[:RETURNING]:
            assert usage.status == "ok" and usage.usage.completion_tokens == TOKENS, usage
        else:  # abandoned streams, and the non-streamed answers nobody waits for
            assert usage.status == "cancelled", usage
            assert usage.usage.completion_tokens < TOKENS, usage
    print(f"gateway killed: {RETURNING} resumed whole, {len(bodies) - RETURNING} cancelled")
