"""Graceful drain on the real broker: SIGTERM to a gateway mid-stream, and to a worker
mid-generation, loses no request and no text."""

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.helpers import eventually, stream_text
from tests.e2e.room_client import Member, new_room
from tests.e2e.sse import Frame, chat_text, iter_frames, last_id, parse_frames
from tests.e2e.ws_client import recv, send, ws_url
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

DRAIN_S = 1.5
TOKENS = 60  # 3 s at 20 tokens/s: the drain deadline comes mid-answer


@pytest.fixture
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    # A system per test: each stops one of its processes.
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="d",
        gateways=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "20"},
        gateway_env={"TOKENBUS_DRAIN_TIMEOUT_S": str(DRAIN_S)},
    ) as sys_:
        yield sys_


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "small",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": TOKENS,
        "stream": True,
    }


async def test_a_gateway_sigterm_lets_streams_run_then_sends_them_to_resume_elsewhere(
    system: System,
) -> None:
    node_a, node_b = system.gateways
    body = _body("Drain me gently")
    frames: list[Frame] = []
    stopping: asyncio.Task[int | None] | None = None
    ready_while_draining: int | None = None
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{node_a.url}/v1/chat/completions", json=body) as resp,
    ):
        request_id = resp.headers["x-request-id"]
        async for frame in iter_frames(resp):
            frames.append(frame)
            if len(frames) == 5 and stopping is None:
                stopping = asyncio.create_task(asyncio.to_thread(node_a.stop, 30.0))

                async def not_ready() -> bool:
                    nonlocal ready_while_draining
                    async with httpx.AsyncClient(timeout=5) as probe:
                        ready_while_draining = (await probe.get(f"{node_a.url}/readyz")).status_code
                    return ready_while_draining == 503

                await eventually(not_ready, within=DRAIN_S)
    assert stopping is not None
    # A clean exit after the hand-off (uvicorn re-raises the signal once it has shut down).
    assert await stopping in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in node_a.log_tail()
    assert ready_while_draining == 503  # readiness went false at once

    # The stream ran on through the drain window, then ended with a resumable error...
    *delivered, (_, last) = frames
    error = json.loads(last)["error"]
    assert error["code"] == "server_shutting_down"
    assert len(delivered) > 5 + 5  # tokens kept coming after SIGTERM (20 a second)
    assert chat_text(delivered)  # and it was mid-answer, not at its end
    # ... from which the other node resumes, byte for byte, to the end.
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.get(
            f"{node_b.url}/v1/streams/{request_id}",
            headers={"last-event-id": str(last_id(delivered))},
        )
    assert resp.status_code == 200, resp.text
    tail = parse_frames(resp.text)
    direct, _, _ = await stream_text(
        system.llmsim_url, body["messages"], model="x", max_tokens=TOKENS
    )
    assert chat_text(delivered + tail) == direct
    assert tail[-1] == (None, "[DONE]")


async def test_a_worker_sigterm_finishes_its_generation_before_it_leaves(system: System) -> None:
    [worker] = system.workers
    body = _body("Finish what you started")
    frames: list[Frame] = []
    stopping: asyncio.Task[int | None] | None = None
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{system.gateway_url}/v1/chat/completions", json=body) as resp,
    ):
        async for frame in iter_frames(resp):
            frames.append(frame)
            if len(frames) == 5 and stopping is None:
                stopping = asyncio.create_task(asyncio.to_thread(worker.stop, 30.0))
    assert stopping is not None
    assert await stopping in (0, -signal.SIGTERM)
    assert "worker_drained" in worker.log_tail()
    direct, _, _ = await stream_text(
        system.llmsim_url, body["messages"], model="x", max_tokens=TOKENS
    )
    assert chat_text(frames) == direct  # the whole answer, not a cut one
    assert frames[-1] == (None, "[DONE]")


async def test_a_gateway_sigterm_sends_room_members_to_another_node_missing_nothing(
    system: System,
) -> None:
    node_a, node_b = system.gateways
    room = await new_room(node_a.url, "any-key")
    ann, ben = (
        Member(node_a.url, room, "Ann", "any-key"),
        Member(node_b.url, room, "Ben", "any-key"),
    )
    await ann.join()
    await ben.join()
    await ben.send({"type": "say", "content": "before"})
    await ann.first(lambda f: f.get("content") == "before")

    stopping = asyncio.create_task(asyncio.to_thread(node_a.stop, 30.0))
    await ben.send({"type": "say", "content": "while node a drains"})
    cut = await ann.first(lambda f: f["type"] == "error", within=DRAIN_S + 10)
    assert (cut["code"], cut["retryable"]) == ("server_shutting_down", True)
    await eventually(lambda: _closed(ann), within=5)
    assert ann.closed == 1012
    assert await stopping in (0, -signal.SIGTERM)

    await ben.send({"type": "say", "content": "after"})
    back = Member(node_b.url, room, "Ann", "any-key")
    state = await back.join(member=ann.state["member"], since=cut["pos"])
    assert state["member"] == ann.state["member"]
    await back.first(lambda f: f.get("content") == "after")
    seen = [f["content"] for f in ann.of("message") + back.of("message")]
    assert seen == ["before", "while node a drains", "after"]  # each once, in order
    assert not ben.of("presence", status="left")  # back in time: no leave shown
    await back.leave()
    await ben.leave()


async def _closed(member: Member) -> bool:
    return member.closed is not None


async def test_a_gateway_sigterm_sends_websocket_streams_to_resume_elsewhere(
    system: System,
) -> None:
    node_a, node_b = system.gateways
    messages = [{"role": "user", "content": "Drain my socket"}]
    async with connect(ws_url(node_a.url)) as conn:
        await send(conn, type="chat", model="small", max_tokens=TOKENS, messages=messages)
        ack = await recv(conn)
        frames = [await recv(conn) for _ in range(3)]
        stopping = asyncio.create_task(asyncio.to_thread(node_a.stop, 30.0))
        while frames[-1]["type"] != "error":
            frames.append(await recv(conn, within=DRAIN_S + 10))
    assert await stopping in (0, -signal.SIGTERM)
    *events, cut = frames
    assert (cut["code"], cut["retryable"]) == ("server_shutting_down", True)
    assert len(events) > 3 + 5  # tokens kept coming through the drain window
    async with connect(ws_url(node_b.url)) as conn:
        await send(conn, type="resume", request_id=ack["request_id"], last_seq=cut["last_seq"])
        assert (await recv(conn))["type"] == "ack"
        while events[-1]["type"] not in ("completed", "failed"):
            events.append(await recv(conn))
    text = "".join(e.get("content", "") for e in events if e["type"] == "delta")
    direct, _, _ = await stream_text(system.llmsim_url, messages, model="x", max_tokens=TOKENS)
    assert text == direct
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
