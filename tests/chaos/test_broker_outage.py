"""The broker killed (SIGKILL) and started again on its data, mid-answer, under a real system
with two gateway nodes and two workers: every service reconnects by itself, every stream ends
with its whole text or with a retryable error after which a resume gives the whole text, new
requests succeed soon after the broker is back, and `/readyz` says when it is away. Beside
the streams, two requests of every kind of the soak's mixed load (chat not streamed,
Responses, WebSocket, resume, cancel) end right, or with an error a retry fixes.

A broker of its own (not the session's), since it is the one thing killed here."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.kafka.local import LocalBroker
from services.bench.mixed import KINDS, MISMATCH, OK, RESUME_MISMATCH, Nodes, run_one
from services.procs import free_port
from tests.e2e.helpers import direct_texts, eventually, stream_text
from tests.e2e.sse import Frame, chat_text, iter_frames, last_id, parse_frames, stream_error
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

STREAMS = 6
TOKENS = 60  # 3 s at 20 tokens/s: the broker dies mid-answer
AWAY_S = 6.0  # killed: this long before it starts again
FROZEN_S = 10.0  # frozen: SIGSTOP for this long


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    tmp = tmp_path_factory.mktemp("chaos-broker")
    broker = LocalBroker(
        tmp / "kafka", port=free_port(), controller_port=free_port(), log_file=tmp / "kafka.log"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def system(broker: LocalBroker, logs_dir: Path) -> Iterator[System]:
    with running_system(
        broker.bootstrap,
        logs_dir,
        tag="chaos",
        gateways=2,
        workers=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "50", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "20"},
    ) as sys_:
        yield sys_


@pytest.fixture
async def mixed_nodes(system: System) -> AsyncIterator[Nodes]:
    async with Nodes(*(g.url for g in system.gateways), max_tokens=TOKENS) as nodes:
        yield nodes


def _body(n: int) -> dict[str, Any]:
    return {
        "model": "small",
        "messages": [{"role": "user", "content": f"Outage question {n}"}],
        "max_tokens": TOKENS,
        "stream": True,
    }


async def _stream(
    url: str, body: dict[str, Any], started: asyncio.Event
) -> tuple[str, list[Frame]]:
    frames: list[Frame] = []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200, await resp.aread()
        request_id = resp.headers["x-request-id"]
        async for frame in iter_frames(resp):
            frames.append(frame)
            if len(frames) >= 3:
                started.set()
    return request_id, frames


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        try:
            return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.TransportError:
            return False


async def _not_ready(nodes: list[str]) -> None:
    """Readiness says the broker is away, on every node."""

    async def away() -> bool:
        return not any(await asyncio.gather(*(_ready(url) for url in nodes)))

    await eventually(away, within=AWAY_S)


async def killed_and_restarted(broker: LocalBroker, nodes: list[str]) -> None:
    broker.kill()
    away_at = time.monotonic()
    await _not_ready(nodes)
    await asyncio.sleep(max(0.0, AWAY_S - (time.monotonic() - away_at)))
    await asyncio.to_thread(broker.start)  # on the same data directory


async def frozen(broker: LocalBroker, nodes: list[str]) -> None:
    pid = broker.pid
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)
    try:
        await _not_ready(nodes)
        await asyncio.sleep(FROZEN_S - AWAY_S)
    finally:
        os.killpg(pid, signal.SIGCONT)


@pytest.mark.parametrize("fault", [killed_and_restarted, frozen], ids=["killed", "frozen"])
async def test_a_broker_outage_mid_answer_loses_no_text(
    broker: LocalBroker,
    system: System,
    mixed_nodes: Nodes,
    fault: Callable[[LocalBroker, list[str]], Awaitable[None]],
) -> None:
    nodes = [g.url for g in system.gateways]
    bodies = [_body(n) for n in range(STREAMS)]
    started = [asyncio.Event() for _ in bodies]
    streams = [
        asyncio.create_task(_stream(nodes[n % 2], body, started[n]))
        for n, body in enumerate(bodies)
    ]
    await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 30)
    # Beside them, two requests of every other kind apps send (Responses, WebSocket, ...).
    kinds = [kind for kind in KINDS for _ in range(2)]
    mixed = [asyncio.create_task(run_one(kind, mixed_nodes, n)) for n, kind in enumerate(kinds)]

    await fault(broker, nodes)
    back_at = time.monotonic()

    async def all_ready() -> bool:
        return all(await asyncio.gather(*(_ready(url) for url in nodes)))

    await eventually(all_ready, within=30)

    # Every stream: its whole text, or a retryable error after which a resume gives it.
    results = await asyncio.wait_for(asyncio.gather(*streams), 180)
    outcomes: list[str] = []
    texts = await direct_texts(system.llmsim_url, bodies)
    for expected, (request_id, frames) in zip(texts, results, strict=True):
        error = stream_error(frames)
        if error is None:
            assert chat_text(frames) == expected, request_id
            outcomes.append("whole")
            continue
        outcomes.append(f"resumed after {error['code']}")
        assert error["code"] in ("stream_timeout", "worker_lost", "slow_consumer"), error
        async with httpx.AsyncClient(timeout=120) as client:
            resp = await client.get(
                f"{nodes[1]}/v1/streams/{request_id}",
                headers={"last-event-id": str(last_id([f for f in frames if f[0] is not None]))},
            )
        assert resp.status_code == 200, resp.text
        tail = parse_frames(resp.text)
        assert chat_text(frames) + chat_text(tail) == expected, request_id

    # New requests succeed soon after the broker is back.
    async def answers() -> bool:
        text, _, _ = await stream_text(
            nodes[0], [{"role": "user", "content": "after"}], model="small", max_tokens=5
        )
        return bool(text)

    await eventually(answers, within=30)

    # The mixed requests: right, or an error that a retry of the same request fixes; never a
    # text that differs.
    mixed_outcomes: list[str] = []
    for n, done in enumerate(await asyncio.wait_for(asyncio.gather(*mixed), 180)):
        assert done.outcome not in (MISMATCH, RESUME_MISMATCH), done
        if done.outcome != OK:
            again = await run_one(done.kind, mixed_nodes, n)
            assert again.outcome == OK, (done, again)
        mixed_outcomes.append(f"{done.kind}:{done.outcome}")
    print(
        f"{fault.__name__}: {outcomes}, mixed {mixed_outcomes}, "
        f"answering {time.monotonic() - back_at:.1f} s after"
    )
