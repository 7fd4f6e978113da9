"""A room's state from its events, the member outbox, and the room protocol (no I/O)."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from contracts.rooms import (
    ROOM_EVENT,
    Answered,
    MemberAlive,
    MemberAsked,
    MemberJoined,
    MemberLeft,
    MemberSaid,
    MemberTyping,
    RoomEvent,
)
from services.gateway.rooms.hub import LocalMember, Outbox, RoomHub
from services.gateway.rooms.protocol import (
    AskMessage,
    JoinMessage,
    parse_room_message,
    said_by,
    spoken,
)
from services.gateway.rooms.state import RoomState
from services.gateway.settings import GatewaySettings
from services.gateway.ws_protocol import WsError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROOM = {"room_id": "conv_1", "tenant": "acme"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def frames(events: list[RoomEvent], state: RoomState | None = None) -> list[Any]:
    state = state or RoomState("conv_1", "acme")
    return [state.apply(event, pos) for pos, event in enumerate(events)]


class TestRoomState:
    def test_the_same_events_give_the_same_frames_and_state_on_every_node(self) -> None:
        events: list[RoomEvent] = [
            MemberJoined(**ROOM, member="m1", user="Ann", ts=at(0)),
            MemberJoined(**ROOM, member="m2", user="Ben", ts=at(1)),
            MemberSaid(**ROOM, member="m1", user="Ann", message_id="i1", content="hi", ts=at(2)),
            MemberTyping(**ROOM, member="m2", user="Ben", active=True, ts=at(3)),
        ]
        wire = [ROOM_EVENT.validate_json(ROOM_EVENT.dump_json(e)) for e in events]
        a, b = RoomState("conv_1", "acme"), RoomState("conv_1", "acme")
        assert frames(events, a) == frames(wire, b)
        assert a.snapshot() == b.snapshot()
        assert a.snapshot()["members"] == [
            {"member": "m1", "user": "Ann"},
            {"member": "m2", "user": "Ben"},
        ]
        assert a.pos == 3

    def test_coming_back_or_an_alive_is_no_news_and_a_left_is_told_once(self) -> None:
        shown = frames(
            [
                MemberJoined(**ROOM, member="m1", user="Ann", ts=at(0)),
                MemberJoined(**ROOM, member="m1", user="Ann", ts=at(5)),  # back, another node
                MemberAlive(**ROOM, member="m1", user="Ann", ts=at(6)),
                MemberLeft(**ROOM, member="m1", reason="timeout", ts=at(30)),
                MemberLeft(**ROOM, member="m1", reason="timeout", ts=at(30)),  # a second node
            ]
        )
        assert shown[1:3] == [None, None] and shown[4] is None
        assert shown[3] == {
            "type": "presence",
            "member": "m1",
            "user": "Ann",  # from the state: the node saying it left may not know the name
            "status": "left",
            "reason": "timeout",
            "pos": 3,
        }

    def test_an_alive_makes_a_member_known_to_a_node_that_started_later(self) -> None:
        state = RoomState("conv_1", "acme")
        assert state.apply(MemberAlive(**ROOM, member="m9", user="Old", ts=at(0)), 0) is None
        assert state.snapshot()["members"] == [{"member": "m9", "user": "Old"}]

    def test_one_answer_and_only_the_first_end_of_it_counts(self) -> None:
        state = RoomState("conv_1", "acme")
        asked = MemberAsked(
            **ROOM, member="m1", user="Ann", message_id="q", content="why?", request_id="r1"
        )
        end = Answered(
            **ROOM,
            member="m1",
            user="assistant",
            request_id="r1",
            message_id="a",
            status="completed",
            content="because",
        )
        shown = frames([asked], state)
        assert state.answering == "r1" and shown[0]["request_id"] == "r1"
        first = state.apply(end, 1)
        assert first is not None and first["role"] == "assistant" and state.answering is None
        assert state.apply(end, 2) is None  # another node's copy

    def test_stale_members_are_those_nobody_kept_alive(self) -> None:
        state = RoomState("conv_1", "acme")
        frames(
            [
                MemberJoined(**ROOM, member="m1", user="Ann", ts=at(0)),
                MemberJoined(**ROOM, member="m2", user="Ben", ts=at(0)),
                MemberAlive(**ROOM, member="m2", user="Ben", ts=at(10)),
            ],
            state,
        )
        assert [m.member for m in state.stale(at(16), timeout_s=15)] == ["m1"]


class TestOutbox:
    async def test_frames_come_out_in_order_with_their_positions(self) -> None:
        box = Outbox(limit=3)
        box.put("a", pos=1)
        box.put("b", seq=0)
        assert await box.take() == [("a", 1, None), ("b", None, 0)]

    async def test_a_member_that_falls_behind_is_dropped_alone_and_nothing_waits(self) -> None:
        box = Outbox(limit=2)
        for text in "abc":
            box.put(text)  # never blocks
        assert box.dropped
        assert await asyncio.wait_for(box.take(), 1) == []  # the writer wakes to say so

    async def test_drain_still_hands_out_what_is_queued(self) -> None:
        box = Outbox(limit=5)
        box.put("last", pos=7)
        box.drain()
        assert await box.take() == [("last", 7, None)] and box.draining


class TestProtocol:
    @pytest.mark.parametrize("name", ["A: B", "", "x" * 41, "bell\x07", "Assistant"])
    def test_names_that_would_blur_who_said_what_are_refused(self, name: str) -> None:
        error = parse_room_message(json.dumps({"type": "join", "user": name}))
        assert isinstance(error, WsError) and error.code == "invalid_value"
        assert error.param == "user"

    def test_a_name_and_its_text_come_apart_again(self) -> None:
        join = parse_room_message(json.dumps({"type": "join", "user": " Zoë "}))
        assert isinstance(join, JoinMessage) and join.user == "Zoë"
        assert said_by(spoken("Zoë", "a: b")) == ("Zoë", "a: b")
        assert said_by("no name here") == ("", "no name here")

    def test_an_ask_carries_generation_parameters_and_the_speakers_name(self) -> None:
        raw = {"type": "ask", "content": "sum up", "max_tokens": 9, "temperature": 0.5, "id": 3}
        ask = parse_room_message(json.dumps(raw))
        assert isinstance(ask, AskMessage) and ask.id == 3
        body = ask.request("Ann")
        assert (body.model, body.max_tokens, body.temperature) == ("auto", 9, 0.5)
        assert [m.model_dump(exclude_none=True) for m in body.messages] == [
            {"role": "user", "content": "Ann: sum up"}
        ]

    def test_unknown_types_name_the_room_messages(self) -> None:
        error = parse_room_message(json.dumps({"type": "chat"}))
        assert isinstance(error, WsError) and error.code == "unknown_type"
        assert "join, say, ask" in error.message


class TestHub:
    def test_an_old_socket_going_away_leaves_the_member_back_on_a_new_one(self) -> None:
        node = SimpleNamespace(settings=GatewaySettings(bootstrap_servers="127.0.0.1:1"))
        hub = RoomHub(node, consumer=lambda: None)  # type: ignore[arg-type]
        old, new = (LocalMember("m1", "Ann", Outbox(4)) for _ in range(2))
        hub.local["conv_1"] = {"m1": new}  # back (same member id) before the old one closed
        hub.detach("conv_1", old)
        assert hub.local["conv_1"] == {"m1": new} and not new.outbox.closed
        assert old.outbox.closed
        hub.detach("conv_1", new)
        assert "conv_1" not in hub.local
