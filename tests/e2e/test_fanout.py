"""Fan-out on two gateway nodes: resume anywhere, cancel, grace period, many watchers."""

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from websockets.asyncio.client import connect

from contracts import TOPICS, new_request_id
from services.tenants.settings import PLACEHOLDER_ID_SECRET
from tests.e2e.helpers import eventually, llmsim_stats, stream_text
from tests.e2e.sse import Frame, chat_text, iter_frames, last_id, parse_frames
from tests.e2e.usage import usage_of
from tests.e2e.ws_client import recv, send, ws_url
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

GRACE_S = 2.0
FAST_SMALL = '{"llmsim-small": {"ttft_ms": 0, "tokens_per_second": 0}}'


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="w",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "20",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100",
            # the small model answers at full speed (the big answers)
            "TOKENBUS_LLMSIM_PROFILES": FAST_SMALL,
        },
        gateway_env={
            "TOKENBUS_DISCONNECT_GRACE_S": str(GRACE_S),
            "TOKENBUS_SUBSCRIBER_BUFFER": "2048",
            "TOKENBUS_WATCHER_STALL_S": "2",
            "TOKENBUS_SEND_TIMEOUT_S": "120",
        },
    ) as sys_:
        yield sys_


def _body(text: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "large",
        **extra,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }


async def _start_and_cut(url: str, body: dict[str, Any], k: int) -> tuple[str, list[Frame]]:
    """POST a stream, read its first k frames, and hang up; return (request id, frames)."""
    frames: list[Frame] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
    ):
        request_id = resp.headers["x-request-id"]
        async for f in iter_frames(resp):
            frames.append(f)
            if len(frames) == k:
                break
    return request_id, frames


async def _watch(url: str, request_id: str, after: int | None = None) -> list[Frame]:
    headers = {} if after is None else {"last-event-id": str(after)}
    async with httpx.AsyncClient(timeout=60) as client:
        resp = await client.get(f"{url}/v1/streams/{request_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    return parse_frames(resp.text)


class TestResume:
    @pytest.mark.parametrize("where", ["start", "middle", "end"])
    async def test_a_stream_cut_on_one_node_resumes_byte_identical_on_the_other(
        self, system: System, where: str
    ):
        node_a, node_b = system.gateways
        tokens = 40
        total = 1 + tokens + 3  # role, deltas, finish, usage, [DONE]
        k = {"start": 1, "middle": total // 2, "end": total - 1}[where]
        body = _body(f"resume at the {where}", tokens)
        request_id, head = await _start_and_cut(node_a.url, body, k)
        assert request_id.split("-")[2] in ("0", "2")  # node A's partitions
        tail = await _watch(node_b.url, request_id, after=last_id(head))
        whole = await _watch(node_b.url, request_id)  # a replay after the end
        assert head + tail == whole
        direct, _, _ = await stream_text(
            system.llmsim_url, body["messages"], model="x", max_tokens=tokens
        )
        assert chat_text(whole) == direct
        assert whole[-1] == (None, "[DONE]")

    async def test_an_unknown_or_foreign_id_is_a_404(self, system: System):
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            secret = PLACEHOLDER_ID_SECRET.encode()  # the open-mode system's
            for request_id in (
                "nope",
                "chatcmpl-10-0-0123456789abcdef",  # the old shape, with no tenant tag
                new_request_id(9, 1, "dev", secret),  # no partition 9
                new_request_id(0, int(time.time() * 1000) - 3_600_000, "dev", secret),  # none
                new_request_id(0, int(time.time() * 1000), "other-tenant", secret),
            ):
                resp = await client.get(f"/v1/streams/{request_id}")
                assert resp.status_code == 404, request_id
                assert resp.json()["error"]["code"] == "stream_not_found"

    async def test_an_id_older_than_the_topics_retention_is_a_410_on_http_and_websocket(
        self, system: System
    ):
        retention_ms = TOPICS.tokens.retention_ms
        assert retention_ms is not None
        born = int(time.time() * 1000) - retention_ms - 60_000
        request_id = new_request_id(1, born, "dev", PLACEHOLDER_ID_SECRET.encode())
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            resp = await client.get(f"/v1/streams/{request_id}")
        assert resp.status_code == 410
        error = resp.json()["error"]
        assert (error["code"], error["type"], error["param"]) == (
            "stream_expired",
            "invalid_request_error",
            "request_id",
        )
        assert "24 hours" in error["message"]
        async with connect(ws_url(system.gateway_url)) as conn:
            await send(conn, type="resume", id="r", request_id=request_id, last_seq=3)
            frame = await recv(conn)
        assert (frame["type"], frame["code"], frame["id"]) == ("error", "stream_expired", "r")


class TestCancel:
    async def test_delete_stops_the_upstream_and_records_partial_usage(self, system: System):
        body = _body("cancel me", 400)
        request_id, _head = await _start_and_cut(system.gateway_url, body, 5)
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.delete(f"{system.gateways[1].url}/v1/streams/{request_id}")
        assert resp.status_code == 202

        async def upstream_closed() -> bool:
            return (await llmsim_stats(system.llmsim_url))["open_streams"] == 0

        await eventually(upstream_closed, within=1.0)
        usage = await usage_of(
            system.bootstrap, TOPICS.with_prefix(system.prefix).usage.name, request_id
        )
        assert usage.status == "cancelled" and usage.finish_reason == "cancelled"
        assert 3 <= usage.usage.completion_tokens < 400
        frames = await _watch(system.gateway_url, request_id)
        finish = [json.loads(d) for _, d in frames if '"finish_reason":"cancelled"' in d]
        assert finish and frames[-1] == (None, "[DONE]")


class TestGracePeriod:
    async def test_a_client_that_leaves_and_never_returns_is_cancelled_after_the_grace(
        self, system: System
    ):
        request_id, _ = await _start_and_cut(system.gateway_url, _body("left", 400), 3)
        usage = await usage_of(
            system.bootstrap,
            TOPICS.with_prefix(system.prefix).usage.name,
            request_id,
            within=GRACE_S + 15,
        )
        assert usage.status == "cancelled"
        assert usage.duration_ms >= GRACE_S * 1000  # it kept going through the grace period
        assert usage.usage.completion_tokens < 400

    async def test_a_client_that_resumes_within_the_grace_gets_the_whole_answer(
        self, system: System
    ):
        body = _body("come back", 300)
        request_id, head = await _start_and_cut(system.gateway_url, body, 3)
        tail = await _watch(system.gateways[1].url, request_id, after=last_id(head))
        usage = await usage_of(
            system.bootstrap, TOPICS.with_prefix(system.prefix).usage.name, request_id
        )
        assert usage.status == "ok" and usage.usage.completion_tokens == 300
        assert usage.duration_ms > GRACE_S * 1000  # longer than the grace: it was not cut
        direct, _, _ = await stream_text(
            system.llmsim_url, body["messages"], model="x", max_tokens=300
        )
        assert chat_text(head + tail) == direct


def _stalled_watcher(url: str, request_id: str) -> socket.socket:
    """A client that asks for the stream and then reads nothing, with a tiny receive window."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /v1/streams/{request_id} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    sock.close()
    return b"".join(chunks)


def _dechunk(raw: bytes) -> str:
    """The body of a raw HTTP response, read with h11 (undoes chunked framing)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    body = []
    while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        if isinstance(event, h11.Data):
            body.append(bytes(event.data))
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    return b"".join(body).decode()


async def _drops(url: str) -> bool:
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{url}/metrics")).text
    counted = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("tokenbus_gateway_slow_consumer_drops_total")
    ]
    return bool(counted) and counted[0] >= 1


class TestWatchers:
    async def test_watchers_see_identical_streams_and_a_stalled_one_is_dropped_alone(
        self, system: System
    ):
        # Enough bytes (~6.5 MB) to fill a stalled client's socket buffers (the server's send
        # buffer grows to 4 MB on loopback), the server's write buffer, then the watcher's own.
        tokens = 24_000
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream(
                "POST",
                f"{system.gateway_url}/v1/chat/completions",
                json=_body("watch me", tokens, model="small"),
            ) as resp,
        ):
            request_id = resp.headers["x-request-id"]
            stalled = _stalled_watcher(system.gateways[1].url, request_id)
            watchers = [asyncio.create_task(_watch(g.url, request_id)) for g in system.gateways]
            asker = [f async for f in iter_frames(resp)]
            first, second = await asyncio.gather(*watchers)
        assert first == second == asker
        assert len(asker) == 1 + tokens + 3
        # The stalled watcher's own feed may still lag: read its socket only once the node has
        # dropped it, or the reading itself would un-stall it.
        await eventually(lambda: _drops(system.gateways[1].url), within=60)
        raw = await asyncio.to_thread(_read_all, stalled)
        frames = parse_frames(_dechunk(raw))
        data = [d for _, d in frames if d]
        assert json.loads(data[-1])["error"]["code"] == "slow_consumer"
        ids = [int(i) for i, _ in frames if i is not None]
        assert ids == list(range(len(ids))) and len(ids) < tokens  # a prefix, then the drop
