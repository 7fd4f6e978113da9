"""WS /v1/ws end to end: chats, resume across gateway nodes, cancel, bad messages, auth."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from contracts import TOPICS, Completed, Delta, Started, TokenUsage, new_request_id
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.tenants.database import open_store
from services.tenants.settings import PLACEHOLDER_ID_SECRET
from tests.e2e.helpers import eventually, llmsim_stats, stream_text
from tests.e2e.usage import usage_of
from tests.e2e.ws_client import recv, send, ws_url
from tests.fakes import serve
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

HEARTBEAT_S = 0.5
QUESTION = [{"role": "user", "content": "What is a WebSocket, in one sentence?"}]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    """Two gateway nodes (reply partitions 0,2 and 1,3) and one worker."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="w",
        gateways=2,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100"},
        gateway_env={"TOKENBUS_WS_HEARTBEAT_S": str(HEARTBEAT_S)},
    ) as sys_:
        yield sys_


@pytest.fixture
async def ws(system: System) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(system.gateways[0].url)) as conn:
        yield conn


async def chat(conn: ClientConnection, id: str, messages: Any, **params: Any) -> str:
    """Send a chat; return its request id from the ack (the first frame after it)."""
    await send(
        conn, type="chat", id=id, model=params.pop("model", "auto"), messages=messages, **params
    )
    ack = await recv(conn)
    assert ack == {"type": "ack", "action": "chat", "id": id, "request_id": ack["request_id"]}
    assert ack["request_id"].startswith("chatcmpl-")
    return ack["request_id"]  # type: ignore[no-any-return]


async def until_end(conn: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    events = []
    while True:
        frame = await recv(conn)
        assert frame["request_id"] == request_id, frame
        events.append(frame)
        if frame["type"] in ("completed", "failed", "error"):
            return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "delta")


def check_stream(events: list[dict[str, Any]], request_id: str, tokens: int) -> None:
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == ["started"] + ["delta"] * tokens + ["completed"]
    assert all(e["request_id"] == request_id for e in events)
    started, completed = events[0], events[-1]
    assert started["tier"] in ("small", "large") and started["model"].startswith("llmsim")
    assert set(events[1]) == {"type", "request_id", "seq", "content"}
    assert completed["finish_reason"] == "length"
    assert completed["usage"]["completion_tokens"] == tokens


async def resume(conn: ClientConnection, request_id: str, last_seq: int) -> list[dict[str, Any]]:
    await send(conn, type="resume", id="r", request_id=request_id, last_seq=last_seq)
    ack = await recv(conn)
    assert ack == {"type": "ack", "action": "resume", "id": "r", "request_id": request_id}
    return await until_end(conn, request_id)


class TestChat:
    async def test_ack_then_started_deltas_completed_with_llmsim_text(
        self, system: System, ws: ClientConnection
    ):
        request_id = await chat(ws, "c1", QUESTION, max_tokens=20, stream=False)
        events = await until_end(ws, request_id)
        check_stream(events, request_id, 20)
        direct, _, _ = await stream_text(system.llmsim_url, QUESTION, model="x", max_tokens=20)
        assert text_of(events) == direct

    async def test_two_chats_on_one_socket_interleave_and_both_complete(
        self, system: System, ws: ClientConnection
    ):
        prompts = {
            "a": [{"role": "user", "content": "Tell me about partitions."}],
            "b": [{"role": "user", "content": "Tell me about consumer groups."}],
        }
        for id_, messages in prompts.items():
            await send(ws, type="chat", id=id_, model="small", messages=messages, max_tokens=40)
        ids: dict[str, str] = {}
        frames: list[dict[str, Any]] = []
        while len([f for f in frames if f["type"] == "completed"]) < 2:
            frame = await recv(ws)
            if frame["type"] == "ack":
                ids[frame["id"]] = frame["request_id"]
            else:
                assert frame["request_id"] in ids.values(), "events come after their ack"
                frames.append(frame)
        owners = [f["request_id"] for f in frames]
        # Interleaved: the second answer began before the first one ended.
        assert owners.index(ids["b"]) < len(owners) - 1 - owners[::-1].index(ids["a"])
        for id_, messages in prompts.items():
            events = [f for f in frames if f["request_id"] == ids[id_]]
            check_stream(events, ids[id_], 40)
            direct, _, _ = await stream_text(system.llmsim_url, messages, model="x", max_tokens=40)
            assert text_of(events) == direct

    async def test_a_responses_request_streams_the_responses_events_beside_a_chat(
        self, system: System, ws: ClientConnection
    ):
        question = "What is a topic partition?"
        await send(ws, type="response.create", id="r", model="small", input=question)
        await send(ws, type="chat", id="c", model="small", messages=QUESTION, max_tokens=10)
        acks: dict[str, dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        chat_done = False
        while not (chat_done and events and events[-1]["type"] == "response.completed"):
            frame = await recv(ws)
            if frame["type"] == "ack":
                acks[frame["id"]] = frame
            elif frame.get("response_id"):
                assert frame["response_id"] == acks["r"]["response_id"]
                events.append(frame)
            else:
                chat_done = chat_done or frame["type"] == "completed"
        assert acks["r"]["response_id"].startswith("resp_")
        assert events[0]["type"] == "response.created"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        direct, _, _ = await stream_text(
            system.llmsim_url, [{"role": "user", "content": question}], model="x"
        )
        assert text == direct

    async def test_a_chat_in_a_conversation_continues_its_history(
        self, system: System, ws: ClientConnection
    ):
        async with httpx.AsyncClient(base_url=system.gateway_url) as client:
            conv = (await client.post("/v1/conversations", json={})).json()["id"]
        first = [{"role": "user", "content": "Name a Kafka concept."}]
        second = [{"role": "user", "content": "And another one?"}]
        rid = await chat(ws, "c1", first, model="small", max_tokens=12, conversation=conv)
        answer = text_of(await until_end(ws, rid))
        rid = await chat(ws, "c2", second, model="small", max_tokens=12, conversation=conv)
        events = await until_end(ws, rid)
        history = [*first, {"role": "assistant", "content": answer}, *second]
        direct, _, _ = await stream_text(system.llmsim_url, history, model="x", max_tokens=12)
        assert text_of(events) == direct

    async def test_ping_pong_and_heartbeat_when_idle(self, ws: ClientConnection):
        await send(ws, type="ping", id=9)
        assert await recv(ws) == {"type": "pong", "id": 9}
        async with asyncio.timeout(HEARTBEAT_S * 4):
            assert json.loads(await ws.recv()) == {"type": "heartbeat"}


TOKENS = 60


class TestResumeAcrossNodes:
    @pytest.mark.parametrize("where", ["start", "middle", "end"])
    async def test_resume_on_the_other_node_continues_exactly(self, system: System, where: str):
        # k = the last seq the client got: `started`, half the answer, or the last delta.
        k = {"start": 0, "middle": TOKENS // 2, "end": TOKENS}[where]
        messages = [{"role": "user", "content": f"Resume me at {where}."}]
        async with connect(ws_url(system.gateways[0].url)) as first:
            request_id = await chat(first, "c", messages, model="small", max_tokens=TOKENS)
            before = []
            while not before or before[-1]["seq"] < k:
                before.append(await recv(first))
        assert before[-1]["seq"] == k  # the socket closed before `completed`
        async with connect(ws_url(system.gateways[1].url)) as second:
            after = await resume(second, request_id, k)
            assert after[0]["seq"] == k + 1
            whole = await resume(second, request_id, -1)
        assert before + after == whole
        check_stream(whole, request_id, TOKENS)
        direct, _, _ = await stream_text(system.llmsim_url, messages, model="x", max_tokens=TOKENS)
        assert text_of(whole) == direct

    async def test_resume_of_an_unknown_stream_is_an_error(self, ws: ClientConnection):
        # A well-formed id of this (open-mode) tenant from an hour ago: no events.
        an_hour_ago = int(time.time() * 1000) - 3_600_000
        unknown = new_request_id(0, an_hour_ago, "dev", PLACEHOLDER_ID_SECRET.encode())
        await send(ws, type="resume", id="r", request_id=unknown, last_seq=-1)
        error = await recv(ws)
        assert (error["type"], error["code"], error["id"]) == ("error", "stream_not_found", "r")
        assert error["request_id"] == unknown


class TestCancel:
    async def test_cancel_stops_the_backend_and_ends_with_cancelled_usage(
        self, system: System, ws: ClientConnection
    ):
        async def idle() -> bool:
            return (await llmsim_stats(system.llmsim_url))["open_streams"] == 0

        await eventually(idle, within=10)  # earlier tests' streams are over
        request_id = await chat(ws, "long", QUESTION, model="small", max_tokens=400)
        events = []
        while len([e for e in events if e["type"] == "delta"]) < 3:
            events.append(await recv(ws))
        await send(ws, type="cancel", id="x", request_id=request_id)
        while (frame := await recv(ws))["type"] != "ack":
            events.append(frame)
        assert frame == {"type": "ack", "action": "cancel", "id": "x", "request_id": request_id}
        await eventually(idle, within=1.0)
        events += await until_end(ws, request_id)
        completed = events[-1]
        assert completed["type"] == "completed" and completed["finish_reason"] == "cancelled"
        assert [e["seq"] for e in events] == list(range(len(events)))
        usage = await usage_of(
            system.bootstrap, TOPICS.with_prefix(system.prefix).usage.name, request_id
        )
        assert usage.status == "cancelled" and usage.finish_reason == "cancelled"
        assert 0 < usage.usage.completion_tokens < 400

    async def test_cancel_of_an_unknown_id_is_an_error(self, ws: ClientConnection):
        await send(ws, type="cancel", request_id="not-ours")
        error = await recv(ws)
        assert (error["code"], error["request_id"], error["param"]) == (
            "stream_not_found",
            "not-ours",
            "request_id",
        )


class TestBadMessages:
    async def test_each_gets_an_error_and_the_socket_still_chats(
        self, system: System, ws: ClientConnection
    ):
        bad: list[tuple[str | bytes, str, str | None]] = [
            ("{not json", "invalid_json", None),
            (b"\xff\xfe", "invalid_json", None),
            ("[1, 2]", "invalid_json", None),
            ('{"type": "subscribe"}', "unknown_type", "type"),
            ('{"id": "q"}', "unknown_type", "type"),
            (
                json.dumps({"type": "chat", "id": "c", "model": "auto", "messages": []}),
                "invalid_value",
                "messages",
            ),
            (
                json.dumps(
                    {
                        "type": "chat",
                        "model": "auto",
                        "messages": [{"role": "robot", "content": "x"}],
                    }
                ),
                "invalid_value",
                "messages.0.role",
            ),
            (
                json.dumps({"type": "resume", "request_id": "x", "last_seq": -5}),
                "invalid_value",
                "last_seq",
            ),
        ]
        for raw, code, param in bad:
            await ws.send(raw)
            error = await recv(ws)
            assert error["type"] == "error" and error["code"] == code, (raw, error)
            assert error.get("param") == param and error["message"]
        request_id = await chat(ws, "ok", QUESTION, max_tokens=5)
        events = await until_end(ws, request_id)
        check_stream(events, request_id, 5)


@contextlib.asynccontextmanager
async def keyed_gateway(system: System, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A keys-mode gateway (lifespan off: no Kafka needed to authenticate); (its URL, a key)."""
    settings = GatewaySettings(
        bootstrap_servers=system.bootstrap,
        models="sim",
        llmsim_url=f"{system.llmsim_url}/v1",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/keys.db",
        key_pepper="ws-pepper",
        id_secret="ws-id-secret",
    )
    async with open_store(settings) as store:
        _, key = await store.create_key("tenant-a")
    app = create_app(settings)
    try:
        async with serve(app) as url:
            yield url, key
    finally:
        await app.state.node.auth.store.engine.dispose()


class TestAuth:
    async def test_key_as_subprotocol_is_echoed(self, system: System, tmp_path: Path):
        async with keyed_gateway(system, tmp_path) as (url, key):
            async with connect(ws_url(url), subprotocols=[f"bearer.{key}"]) as conn:  # type: ignore[list-item]
                assert conn.subprotocol == f"bearer.{key}"
                await send(conn, type="ping")
                assert await recv(conn) == {"type": "pong"}

    async def test_a_wrong_key_in_the_handshake_is_refused(self, system: System, tmp_path: Path):
        async with keyed_gateway(system, tmp_path) as (url, key):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(ws_url(url), subprotocols=["bearer.nope"]):  # type: ignore[list-item]
                    pass
            assert refused.value.response.status_code == 401
            assert "nope" not in refused.value.response.body.decode()
            with pytest.raises(InvalidStatus):
                async with connect(ws_url(url), additional_headers={"authorization": "Bearer x"}):
                    pass
            # A key in the query string is never read: the socket waits for an `auth`.
            async with connect(ws_url(url) + f"?api_key={key}") as conn:
                await send(conn, type="resume", request_id="x")
                assert (await recv(conn))["code"] == "invalid_api_key"

    async def test_key_as_first_message(self, system: System, tmp_path: Path):
        async with keyed_gateway(system, tmp_path) as (url, key), connect(ws_url(url)) as conn:
            await send(conn, type="cancel", id=1, request_id="chatcmpl-1-0-0123456789abcdef")
            assert (await recv(conn))["code"] == "invalid_api_key"
            await send(conn, type="auth", api_key="sk-wrong")
            assert (await recv(conn))["code"] == "invalid_api_key"
            await send(conn, type="auth", id="a", api_key=key)
            assert await recv(conn) == {"type": "ack", "action": "auth", "id": "a"}
            await send(conn, type="resume", request_id="bad-id")
            assert (await recv(conn))["code"] == "stream_not_found"  # now past auth


class RecordingPublisher:
    """Stands in for Kafka: records what the gateway publishes; the test plays the worker."""

    def __init__(self) -> None:
        self.node = None
        self.chats: list[Any] = []
        self.control: list[tuple[str, str]] = []

    async def chat(self, request: Any) -> None:
        self.chats.append(request)

    async def cancel(self, request_id: str, reason: str) -> None:
        self.control.append(("cancel:" + reason, request_id))

    async def attached(self, request_id: str) -> None:
        self.control.append(("attached", request_id))

    async def detached(self, request_id: str, grace_s: float) -> None:
        self.control.append(("detached", request_id))


@contextlib.asynccontextmanager
async def fake_worker_gateway(
    **settings: Any,
) -> AsyncIterator[tuple[str, Any, RecordingPublisher]]:
    """An in-process gateway whose hub the test feeds directly (no Kafka, no worker)."""
    app = create_app(
        GatewaySettings(
            bootstrap_servers="127.0.0.1:1",
            models="sim",
            llmsim_url="http://127.0.0.1:1/v1",
            **{"auth_mode": "open", **settings},
        )
    )
    publisher = RecordingPublisher()
    app.state.node.publisher = publisher
    async with serve(app) as url:
        yield url, app.state.node.hub, publisher


def _started(request_id: str) -> Started:
    return Started(request_id=request_id, seq=0, attempt="a", model="m", tier="small", created=1)


def _delta(request_id: str, seq: int, text: str = "x") -> Delta:
    return Delta(request_id=request_id, seq=seq, attempt="a", content=text)


class TestSessionWithFakeWorker:
    async def test_a_slow_request_is_dropped_alone_with_its_last_seq(self):
        async with (
            fake_worker_gateway(subscriber_buffer=16) as (url, hub, _),
            connect(ws_url(url)) as conn,
        ):
            slow = await chat(conn, "slow", QUESTION)
            other = await chat(conn, "other", QUESTION)
            hub.publish(_started(other))
            hub.publish(_started(slow))
            for seq in range(1, 100):  # all at once: more than its buffer of 16
                hub.publish(_delta(slow, seq))
            frames = [await recv(conn) for _ in range(2)]
            while frames[-1]["type"] != "error":
                frames.append(await recv(conn))
            error = frames[-1]
            slow_events = [f for f in frames[:-1] if f["request_id"] == slow]
            assert error["code"] == "slow_consumer" and error["retryable"] is True
            assert error["request_id"] == slow and error["last_seq"] == slow_events[-1]["seq"]
            assert [e["seq"] for e in slow_events] == list(range(len(slow_events)))
            # The other request on the same socket goes on.
            hub.publish(_delta(other, 1, "still here"))
            hub.publish(
                Completed(
                    request_id=other, seq=2, attempt="a", finish_reason="stop", usage=TokenUsage()
                )
            )
            rest = [await recv(conn) for _ in range(2)]
            assert [(f["request_id"], f["type"]) for f in rest] == [
                (other, "delta"),
                (other, "completed"),
            ]

    async def test_closing_the_socket_detaches_unfinished_requests_only(self):
        async with fake_worker_gateway() as (url, hub, publisher):
            async with connect(ws_url(url)) as conn:
                done = await chat(conn, "done", QUESTION)
                open_ = await chat(conn, "open", QUESTION)
                for request_id in (done, open_):
                    hub.publish(_started(request_id))
                hub.publish(
                    Completed(
                        request_id=done,
                        seq=1,
                        attempt="a",
                        finish_reason="stop",
                        usage=TokenUsage(),
                    )
                )
                seen = {(f["request_id"], f["type"]) for f in [await recv(conn) for _ in range(3)]}
                assert (done, "completed") in seen and (open_, "started") in seen

            async def detached() -> bool:
                return ("detached", open_) in publisher.control

            await eventually(detached, within=5)
            assert ("detached", done) not in publisher.control
            assert not hub.is_watched(open_) and not hub.is_watched(done)

    async def test_no_worker_in_time_withdraws_the_request(self):
        async with (
            fake_worker_gateway(first_event_timeout_s=0.2) as (url, _, publisher),
            connect(ws_url(url)) as conn,
        ):
            request_id = await chat(conn, "c", QUESTION)
            error = await recv(conn, within=5)
            assert (error["code"], error["request_id"], error["retryable"]) == (
                "overloaded",
                request_id,
                True,
            )
            assert ("cancel:no_worker", request_id) in publisher.control
