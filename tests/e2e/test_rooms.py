"""Rooms on two gateway nodes, a real broker and real WebSocket clients (docs/rooms.md):
presence, typing, messages in one order, one answer streamed to all, late joiners, members who
come back on the other node, limits and bad input."""

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings
from tests.capabilities import in_ci
from tests.e2e.helpers import eventually, llmsim_stats, scrape, stream_text, total
from tests.e2e.room_client import Frame, Member, new_room
from tests.postgres import find_bin_dir, fresh_database
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PEPPER, ID_SECRET = "e2e-rooms-pepper-0123456789", "e2e-rooms-id-secret-0123456789"
KEYRING = "e2e:" + base64.b64encode(b"tokenbus-e2e-rooms-keyring-key!!").decode()
PRESENCE_TIMEOUT_S = 3
MAX_MEMBERS = 4
MAX_ROOMS = 2
ANSWER_TOKENS = 40
# "large" streams slowly (time to cancel it, and to join mid-answer); "small" answers fast.
PROFILES = '{"llmsim-large": {"ttft_ms": 100, "tokens_per_second": 20}}'


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """PostgreSQL when it is available (required under CI=true), else a SQLite file both
    nodes share."""
    if in_ci() or os.environ.get("TEST_POSTGRES_URL") or find_bin_dir():
        return await fresh_database(request.getfixturevalue("postgres_server"))
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('rooms')}/rooms.db"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, database_url: str) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="room",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "5",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "400",
            "TOKENBUS_LLMSIM_DEFAULT_MAX_TOKENS": str(ANSWER_TOKENS),
            "TOKENBUS_LLMSIM_PROFILES": PROFILES,
        },
        gateway_env={
            "TOKENBUS_AUTH_MODE": "keys",
            "TOKENBUS_DATABASE_URL": database_url,
            "TOKENBUS_KEY_PEPPER": PEPPER,
            "TOKENBUS_ID_SECRET": ID_SECRET,
            "TOKENBUS_CONVERSATION_KEYS": KEYRING,
            "TOKENBUS_ROOM_ALIVE_S": "1",
            "TOKENBUS_ROOM_PRESENCE_TIMEOUT_S": str(PRESENCE_TIMEOUT_S),
            "TOKENBUS_ROOM_MAX_MEMBERS": str(MAX_MEMBERS),
            "TOKENBUS_ROOM_MAX_PER_TENANT": str(MAX_ROOMS),
            "TOKENBUS_ROOM_MAX_MESSAGE_CHARS": "200",
        },
    ) as sys_:
        yield sys_


@pytest.fixture
async def key(system: System, database_url: str) -> str:
    """A fresh tenant for each test: its rooms and limits are its own."""
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        _, key = await store.create_key(f"t-{uuid.uuid4().hex[:8]}")
    return key


@pytest.fixture
def nodes(system: System) -> tuple[str, str]:
    return system.gateways[0].url, system.gateways[1].url


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    """Every member a test makes leaves at its end (so its presence does not linger)."""
    made: list[Member] = []
    yield made
    for member in made:
        with contextlib.suppress(Exception):
            await member.leave()


async def joined(made: list[Member], url: str, room: str, user: str, key: str) -> Member:
    member = Member(url, room, user, key)
    made.append(member)
    state = await member.join()
    assert state["type"] == "room_state", state
    return member


async def llmsim_answer(system: System, messages: list[dict[str, str]]) -> str:
    text, _, _ = await stream_text(system.llmsim_url, messages, model="x")
    return text


def said(frames: list[Frame]) -> list[tuple[str, str, str]]:
    """The room's messages as a member saw them: (who, role, text)."""
    return [(f["user"], f["role"], f["content"]) for f in frames if f["type"] == "message"]


async def everyone_sees(group: list[Member], count: int) -> None:
    async def all_there() -> bool:
        return all(
            len({m["member"] for m in member.state["members"]} | _joins(member)) >= count
            for member in group
        )

    await eventually(all_there, within=10)


def _joins(member: Member) -> set[str]:
    return {f["member"] for f in member.of("presence", status="joined")}


async def test_three_members_on_two_nodes_share_typing_messages_and_one_answer(
    system: System, nodes: tuple[str, str], key: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    before = [await scrape(node) for node in nodes]
    ann = await joined(members, nodes[0], room, "Ann", key)
    ben = await joined(members, nodes[0], room, "Ben", key)
    cat = await joined(members, nodes[1], room, "Cat", key)
    group = [ann, ben, cat]
    await everyone_sees(group, 3)
    assert {m["user"] for m in cat.state["members"]} == {"Ann", "Ben", "Cat"}

    # Typing reaches the two others, on both nodes, and not the typist.
    await ann.send({"type": "typing", "active": True})
    for other in (ben, cat):
        typing = await other.first(lambda f: f["type"] == "typing")
        assert (typing["user"], typing["active"], typing["member"]) == (
            "Ann",
            True,
            ann.state["member"],
        )

    # Messages from both nodes reach all three in one order.
    await ann.send({"type": "say", "content": "hello from node 0"})
    await cat.send({"type": "say", "content": "hello from node 1"})
    await ben.send({"type": "say", "content": "and me"})
    for member in group:
        await member.first(lambda f: f["type"] == "message" and f["content"] == "and me")
    orders = [said(m.frames) for m in group]
    assert orders[0] == orders[1] == orders[2]
    assert sorted(t for _, _, t in orders[0]) == [
        "and me",
        "hello from node 0",
        "hello from node 1",
    ]
    assert not ann.of("typing"), "the typist got its own typing"
    positions = [f["pos"] for f in ann.frames if f["type"] == "message"]
    assert positions == sorted(positions)

    # The room metrics: members and rooms on each node, events counted once where published.
    after = [await scrape(node) for node in nodes]
    assert [total(a, "tokenbus_room_members") for a in after] == [2, 1]
    assert [total(a, "tokenbus_rooms_open") for a in after] == [1, 1]
    for kind, count in (("joined", 3), ("said", 3), ("typing", 1)):
        published = sum(
            total(a, "tokenbus_room_events_total", type=kind)
            - total(b, "tokenbus_room_events_total", type=kind)
            for a, b in zip(after, before, strict=True)
        )
        assert published == count, kind

    # An ask: the same answer stream to all three, llmsim's answer to the room's history.
    await ben.send({"type": "ask", "content": "what did we say?", "model": "small"})
    asked = await cat.first(lambda f: f["type"] == "message" and "request_id" in f)
    assert (asked["user"], asked["content"]) == ("Ben", "what did we say?")
    request_id = asked["request_id"]
    answers = [await m.answer(request_id) for m in group]
    assert answers[0][1] == answers[1][1] == answers[2][1]  # identical events
    history = [{"role": "user", "content": f"{who}: {text}"} for who, _, text in orders[0]]
    history.append({"role": "user", "content": "Ben: what did we say?"})
    expected = await llmsim_answer(system, history)
    assert answers[0][0] == expected and expected

    # The end is told to the room as the assistant's message, after the last event.
    for member in group:
        done = await member.first(lambda f: f["type"] == "message" and f["role"] == "assistant")
        assert (done["content"], done["status"], done["request_id"]) == (
            expected,
            "completed",
            request_id,
        )
        last = max(i for i, f in enumerate(member.frames) if f.get("request_id") == request_id)
        assert member.frames[last] is done

    # Cancel from a member on the other node stops the backend within a second.
    before = (await llmsim_stats(system.llmsim_url))["streams_closed_early"]
    await ann.send({"type": "ask", "content": "now a long one", "model": "large"})
    asked = await cat.first(lambda f: f.get("content") == "now a long one")
    await cat.first(lambda f: f["type"] == "delta" and f["request_id"] == asked["request_id"])
    await cat.send({"type": "cancel"})
    await cat.first(lambda f: f["type"] == "ack" and f["action"] == "cancel")

    async def backend_stopped() -> bool:
        stats = await llmsim_stats(system.llmsim_url)
        return stats["open_streams"] == 0 and stats["streams_closed_early"] == before + 1

    await eventually(backend_stopped, within=1.0)
    for member in group:
        end = await member.first(
            lambda f: (
                f["type"] == "message"
                and f["role"] == "assistant"
                and f["request_id"] == asked["request_id"]
            )
        )
        assert end["status"] == "cancelled"


async def test_a_late_joiner_gets_the_history_and_the_answer_from_its_start(
    system: System, nodes: tuple[str, str], key: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    ann = await joined(members, nodes[0], room, "Ann", key)
    await ann.send({"type": "say", "content": "before the question"})
    await ann.send({"type": "ask", "content": "tell me slowly", "model": "large"})
    asked = await ann.first(lambda f: f["type"] == "message" and "request_id" in f)
    request_id = asked["request_id"]
    await ann.first(lambda f: f["type"] == "delta" and f["seq"] >= 4)

    dan = await joined(members, nodes[1], room, "Dan", key)
    assert dan.state["answering"] == request_id
    assert [(m["user"], m["content"]) for m in dan.state["history"]] == [
        ("Ann", "before the question"),
        ("Ann", "tell me slowly"),  # the question being answered, though not yet kept
    ]
    assert dan.state["history"][-1]["request_id"] == request_id
    text, events = await dan.answer(request_id)
    assert events[0]["type"] == "started" and events[0]["seq"] == 0  # from its start
    ann_text, ann_events = await ann.answer(request_id)
    assert text == ann_text and events == ann_events
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})  # nothing twice


async def test_a_member_cut_off_comes_back_on_the_other_node_and_misses_nothing(
    system: System, nodes: tuple[str, str], key: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    ann = await joined(members, nodes[0], room, "Ann", key)
    cat = await joined(members, nodes[1], room, "Cat", key)
    await cat.send({"type": "say", "content": "one"})
    await cat.first(lambda f: f.get("content") == "one")
    last_pos = max(f["pos"] for f in cat.frames if "pos" in f)

    await cat.cut()
    await ann.send({"type": "say", "content": "two, while Cat is away"})
    await ann.send({"type": "say", "content": "three"})
    await ann.first(lambda f: f.get("content") == "three")

    back = Member(nodes[0], room, "Cat", key)  # the other node
    members.append(back)
    state = await back.join(member=cat.state["member"], since=last_pos)
    assert state["member"] == cat.state["member"]
    await back.first(lambda f: f.get("content") == "three")
    assert [f["content"] for f in back.of("message")] == ["two, while Cat is away", "three"]
    await ann.send({"type": "say", "content": "four"})
    await back.first(lambda f: f.get("content") == "four")  # then the live tail
    # Back within the timeout: the others saw no leave and no second join.
    assert not ann.of("presence", member=cat.state["member"], status="left")
    assert len(ann.of("presence", member=cat.state["member"], status="joined")) == 1

    # Away for good: it is shown as gone only after the presence timeout.
    await back.cut()
    cut_at = asyncio.get_running_loop().time()
    gone = await ann.first(
        lambda f: f["type"] == "presence" and f["status"] == "left", within=PRESENCE_TIMEOUT_S + 10
    )
    assert asyncio.get_running_loop().time() - cut_at >= PRESENCE_TIMEOUT_S - 1
    assert (gone["member"], gone["reason"]) == (cat.state["member"], "timeout")


async def test_one_answer_at_a_time_and_the_limits_hold(
    system: System, nodes: tuple[str, str], key: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    ann = await joined(members, nodes[0], room, "Ann", key)
    ben = await joined(members, nodes[1], room, "Ben", key)

    await ann.send({"type": "ask", "content": "a long one", "model": "large"})
    await ben.first(lambda f: f["type"] == "started")
    await ben.send({"type": "ask", "content": "me too", "id": "q2"})
    busy = await ben.first(lambda f: f["type"] == "error")
    assert (busy["code"], busy["id"]) == ("room_busy", "q2")
    await ann.send({"type": "cancel"})

    await ann.send({"type": "say", "content": "x" * 201, "id": 7})
    too_long = await ann.first(lambda f: f["type"] == "error" and f.get("id") == 7)
    assert too_long["code"] == "message_too_long"

    for _ in range(12):  # bursts of 10, 5 a second
        await ben.send({"type": "typing", "active": True})
    limited = await ben.first(lambda f: f["type"] == "error" and f["code"] == "rate_limit_exceeded")
    assert limited["retry_after_s"] == 1

    for name in ("Cat", "Dan"):
        await joined(members, nodes[0], room, name, key)
    eve = Member(nodes[1], room, "Eve", key)
    members.append(eve)
    full = await eve.join()
    assert (full["type"], full["code"]) == ("error", "room_full")
    await eventually(lambda: _is_closed(eve), within=5)

    # Rooms with members, per tenant: this one and one more; a third is refused.
    second = await new_room(nodes[0], key)
    await joined(members, nodes[1], second, "Ann", key)
    third = Member(nodes[0], await new_room(nodes[0], key), "Ann", key)
    members.append(third)
    refused = await third.join()
    assert (refused["type"], refused["code"]) == ("error", "too_many_rooms")


async def _is_closed(member: Member) -> bool:
    return member.closed is not None


async def test_bad_messages_get_errors_and_the_socket_stays_open(
    nodes: tuple[str, str], key: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    ann = Member(nodes[1], room, "Ann", key)
    members.append(ann)
    await ann.connect()
    await ann.send({"type": "say", "content": "not joined yet", "id": 1})
    await ann.send("not json")
    await ann.send({"type": "shout", "id": 2})
    await ann.send({"type": "join", "user": "A: B", "id": 3})
    await ann.send({"type": "join", "user": "Ann"})
    await ann.first(lambda f: f["type"] == "room_state")
    await ann.send({"type": "say", "id": 4})
    await ann.send({"type": "cancel", "id": 5})
    await ann.send({"type": "ask", "content": "hi", "max_tokens": -1, "id": 6})
    await ann.send({"type": "ping", "id": 7})
    await ann.first(lambda f: f["type"] == "pong")
    errors = [(f.get("id"), f["code"]) for f in ann.of("error")]
    assert errors == [
        (1, "join_required"),
        (None, "invalid_json"),
        (2, "unknown_type"),
        (3, "invalid_value"),
        (4, "invalid_value"),
        (5, "nothing_to_cancel"),
        (6, "invalid_value"),
    ]
    assert ann.closed is None


async def test_another_tenants_room_does_not_exist_for_it(
    nodes: tuple[str, str], key: str, database_url: str, members: list[Member]
) -> None:
    room = await new_room(nodes[0], key)
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        _, other = await store.create_key(f"t-{uuid.uuid4().hex[:8]}")
    intruder = Member(nodes[1], room, "Mallory", other)
    members.append(intruder)
    refused = await intruder.join()
    assert (refused["type"], refused["code"]) == ("error", "not_found")
    await eventually(lambda: _is_closed(intruder), within=5)
    assert intruder.closed == 1008
    unknown = Member(nodes[0], "conv_" + "0" * 48, "Ann", key)
    members.append(unknown)
    assert (await unknown.join())["code"] == "not_found"
