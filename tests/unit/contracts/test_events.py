"""Event contracts: JSON round trips, tolerant reading, rejection, topics, ids, schemas."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ValidationError

from contracts import (
    STREAM_EVENT,
    TOPICS,
    CancelRequested,
    ChatRequested,
    ClientAttached,
    ClientDetached,
    Completed,
    DeadLetter,
    Delta,
    ErrorCode,
    Event,
    Failed,
    GatewayAlive,
    Message,
    Started,
    TokenUsage,
    Topics,
    UsageRecorded,
    new_request_id,
    parse_request_id,
    request_belongs,
)
from contracts.stream import delta_json

SCHEMAS = Path(__file__).parent / "schemas"
REQUEST_ID = "chatcmpl-18bcfe56800-2-0123456789abcdef"
USAGE = TokenUsage(prompt_tokens=12, completion_tokens=5, total_tokens=17)


def _stream_events() -> list[Event]:
    common: dict[str, Any] = {"request_id": REQUEST_ID, "attempt": "a1"}
    return [
        Started(
            seq=0,
            model="llmsim-small",
            tier="small",
            route_reason="score",
            route_score=0.4,
            created=1_700_000_000,
            **common,
        ),
        Delta(seq=1, content='He said "hi"\n😀', role="assistant", **common),
        Completed(seq=2, finish_reason="stop", usage=USAGE, **common),
        Failed(
            seq=3, code=ErrorCode.WORKER_LOST, message="lost", retryable=True, usage=USAGE, **common
        ),
    ]


def _other_events() -> list[Event]:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        ChatRequested(
            request_id=REQUEST_ID,
            tenant_id="acme",
            model="auto",
            messages=(
                Message(role="system", content="Be brief."),
                Message(role="user", content=[{"type": "text", "text": "hi"}]),
            ),
            params={"temperature": 0.2, "max_tokens": 7, "stop": ["\n"]},
            reply_partition=2,
        ),
        CancelRequested(request_id=REQUEST_ID, reason="disconnect_grace"),
        ClientAttached(request_id=REQUEST_ID, node="gw-1-0a1b2c3d"),
        ClientDetached(request_id=REQUEST_ID, grace_s=30.0),
        GatewayAlive(request_id="gw-1-0a1b2c3d", grace_s=30.0),
        UsageRecorded(
            request_id=REQUEST_ID,
            attempt="a1",
            tenant_id="acme",
            route="score",
            route_score=0.4,
            tier="small",
            backend="llmsim-small",
            model="llmsim-small",
            usage=USAGE,
            cost_usd=0.001,
            ttft_ms=12.5,
            duration_ms=80.0,
            finish_reason="stop",
            status="ok",
            started_at=now,
            finished_at=now,
        ),
        DeadLetter(
            request_id="unknown",
            source_topic="llm.requests",
            source_partition=3,
            source_offset=42,
            key=None,
            value="not json",
            reason="json_invalid",
            consumer="inference",
        ),
    ]


ALL_EVENTS = _stream_events() + _other_events()
EVENT_CLASSES: list[type[Event]] = [type(e) for e in ALL_EVENTS]


def _ids(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def _with(event: Event, **changes: Any) -> dict[str, Any]:
    data = json.loads(event.model_dump_json())
    data.update(changes)
    return data


class TestJsonRoundTrip:
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=_ids(ALL_EVENTS))
    def test_every_event_survives_json(self, event: Event) -> None:
        decoded = type(event).model_validate_json(event.model_dump_json())
        assert decoded == event

    @pytest.mark.parametrize("event", _stream_events(), ids=_ids(_stream_events()))
    def test_stream_union_picks_the_class_named_by_type(self, event: Event) -> None:
        decoded = STREAM_EVENT.validate_json(event.model_dump_json())
        assert type(decoded) is type(event)
        assert decoded == event

    def test_stream_union_accepts_bytes_as_read_from_kafka(self) -> None:
        delta = _stream_events()[1]
        assert STREAM_EVENT.validate_json(delta.model_dump_json().encode()) == delta

    def test_envelope_is_filled_in_by_default(self) -> None:
        a, b = CancelRequested(request_id="r"), CancelRequested(request_id="r")
        assert a.type == "cancel_requested"
        assert a.schema_version == 1
        assert a.event_id != b.event_id  # a fresh dedup key per event
        assert a.ts.tzinfo is not None

    def test_type_names_are_the_documented_ones(self) -> None:
        names = {cls.__name__: cls.model_fields["type"].default for cls in EVENT_CLASSES}
        assert names == {
            "Started": "started",
            "Delta": "delta",
            "Completed": "completed",
            "Failed": "failed",
            "ChatRequested": "chat_requested",
            "CancelRequested": "cancel_requested",
            "ClientAttached": "client_attached",
            "ClientDetached": "client_detached",
            "GatewayAlive": "gateway_alive",
            "UsageRecorded": "usage_recorded",
            "DeadLetter": "dead_letter",
        }


class TestFrozen:
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=_ids(ALL_EVENTS))
    def test_fields_cannot_be_reassigned(self, event: Event) -> None:
        with pytest.raises(ValidationError, match="frozen"):
            event.request_id = "other"  # type: ignore[misc]
        assert event.request_id != "other"

    def test_nested_usage_is_frozen_too(self) -> None:
        with pytest.raises(ValidationError, match="frozen"):
            USAGE.total_tokens = 0  # type: ignore[misc]


class TestTolerantReader:
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=_ids(ALL_EVENTS))
    def test_unknown_fields_are_ignored(self, event: Event) -> None:
        raw = json.dumps(_with(event, added_in_v1_5={"x": 1}, priority="high"))
        decoded = type(event).model_validate_json(raw)
        assert decoded == event
        assert "added_in_v1_5" not in decoded.model_dump()

    @pytest.mark.parametrize("event", _stream_events(), ids=_ids(_stream_events()))
    def test_stream_union_ignores_unknown_fields(self, event: Event) -> None:
        assert STREAM_EVENT.validate_json(json.dumps(_with(event, shard=9))) == event

    def test_message_keeps_openai_fields_it_does_not_model(self) -> None:
        # tool calls and the like must reach the backend unchanged
        message = Message.model_validate(
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}
        )
        assert message.model_dump(exclude_none=True) == {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function"}],
        }


class TestRejectsInvalid:
    @pytest.mark.parametrize("event", ALL_EVENTS, ids=_ids(ALL_EVENTS))
    def test_missing_request_id(self, event: Event) -> None:
        data = _with(event)
        del data["request_id"]
        with pytest.raises(ValidationError, match="request_id"):
            type(event).model_validate(data)

    @pytest.mark.parametrize("request_id", ["", "x" * 129, 42])
    def test_bad_request_id(self, request_id: object) -> None:
        with pytest.raises(ValidationError, match="request_id"):
            CancelRequested.model_validate({"request_id": request_id})

    @pytest.mark.parametrize("event", _stream_events(), ids=_ids(_stream_events()))
    def test_negative_seq(self, event: Event) -> None:
        with pytest.raises(ValidationError, match="seq"):
            STREAM_EVENT.validate_json(json.dumps(_with(event, seq=-1)))

    @pytest.mark.parametrize("event", ALL_EVENTS, ids=_ids(ALL_EVENTS))
    def test_wrong_type_literal_for_the_class(self, event: Event) -> None:
        with pytest.raises(ValidationError, match="type"):
            type(event).model_validate(_with(event, type="something_else"))

    def test_unknown_stream_type(self) -> None:
        raw = json.dumps(_with(_stream_events()[1], type="exploded"))
        with pytest.raises(ValidationError, match="union_tag_invalid"):
            STREAM_EVENT.validate_json(raw)

    def test_stream_event_without_type(self) -> None:
        data = _with(_stream_events()[1])
        del data["type"]
        with pytest.raises(ValidationError, match="union_tag_not_found"):
            STREAM_EVENT.validate_python(data)

    def test_type_decides_the_required_fields(self) -> None:
        # a delta's fields under the `completed` tag are not silently accepted as a Delta
        raw = json.dumps(_with(_stream_events()[1], type="completed"))
        with pytest.raises(ValidationError, match="finish_reason"):
            STREAM_EVENT.validate_json(raw)

    def test_naive_timestamp(self) -> None:
        with pytest.raises(ValidationError, match="ts"):
            CancelRequested.model_validate({"request_id": "r", "ts": "2025-01-01T00:00:00"})

    def test_unknown_error_code(self) -> None:
        with pytest.raises(ValidationError, match="code"):
            STREAM_EVENT.validate_json(json.dumps(_with(_stream_events()[3], code="oops")))

    def test_chat_request_needs_a_message(self) -> None:
        with pytest.raises(ValidationError, match="messages"):
            ChatRequested.model_validate(_with(_other_events()[0], messages=[]))

    def test_chat_request_rejects_unknown_role(self) -> None:
        messages = [{"role": "robot", "content": "hi"}]
        with pytest.raises(ValidationError, match="role"):
            ChatRequested.model_validate(_with(_other_events()[0], messages=messages))

    def test_negative_reply_partition(self) -> None:
        with pytest.raises(ValidationError, match="reply_partition"):
            ChatRequested.model_validate(_with(_other_events()[0], reply_partition=-1))

    def test_negative_token_counts(self) -> None:
        with pytest.raises(ValidationError, match="completion_tokens"):
            TokenUsage(completion_tokens=-1)


class TestTopics:
    def test_with_prefix_prefixes_every_topic_and_keeps_the_rest(self) -> None:
        prefixed = TOPICS.with_prefix("t1.")
        pairs = list(zip(TOPICS.all(), prefixed.all(), strict=True))
        assert len(pairs) == 8  # a new topic is a decision: update this with it
        for original, copy in pairs:
            assert copy.name == "t1." + original.name
            assert (copy.key, copy.partitions, copy.value, copy.retention_ms) == (
                original.key,
                original.partitions,
                original.value,
                original.retention_ms,
            )

    def test_with_prefix_leaves_the_registry_unchanged(self) -> None:
        TOPICS.with_prefix("t2.")
        assert TOPICS.requests.name == "llm.requests"
        assert TOPICS == Topics()

    def test_empty_prefix_is_the_registry_itself(self) -> None:
        assert TOPICS.with_prefix("") is TOPICS

    def test_documented_names_and_keys(self) -> None:
        assert {t.name: t.key for t in TOPICS.all()} == {
            "llm.requests": "request_id",
            "llm.tokens": "request_id",
            "llm.control": "request_id",
            "llm.usage": "tenant_id",
            "llm.rooms": "room_id",
            "llm.requests.dlq": "request_id",
            "llm.tokens.dlq": "request_id",
            "llm.usage.dlq": "tenant_id",
        }

    def test_every_topic_has_partitions(self) -> None:
        assert all(t.partitions >= 1 for t in TOPICS.all())


class TestRequestId:
    SECRET = b"id-secret"

    def test_round_trip(self) -> None:
        request_id = new_request_id(7, 1_730_000_000_123, "acme", self.SECRET)
        ref = parse_request_id(request_id)
        assert ref is not None
        assert (ref.partition, ref.created_ms) == (7, 1_730_000_000_123)

    def test_looks_like_an_openai_completion_id_and_is_unique(self) -> None:
        a, b = new_request_id(0, 1, "acme", self.SECRET), new_request_id(0, 1, "acme", self.SECRET)
        assert a.startswith("chatcmpl-")
        assert a != b

    def test_belongs_to_its_tenant_only(self) -> None:
        request_id = new_request_id(3, 1_730_000_000_123, "acme", self.SECRET)
        assert request_belongs(request_id, "acme", self.SECRET)
        assert not request_belongs(request_id, "other", self.SECRET)
        assert not request_belongs(request_id, "acme", b"another secret")

    def test_any_change_to_the_id_breaks_the_tag(self) -> None:
        request_id = new_request_id(3, 1_730_000_000_123, "acme", self.SECRET)
        body, _, tag = request_id.rpartition("-")
        forged = [
            request_id.replace("-3-", "-2-"),  # another partition
            request_id.replace(f"{1_730_000_000_123:x}", f"{1_730_000_000_124:x}"),  # time
            f"{body[:-1]}{'0' if body[-1] != '0' else '1'}-{tag}",  # random part
            f"{body}-{'0' * 16}",
        ]
        for other in forged:
            assert parse_request_id(other) is not None  # well formed ...
            assert not request_belongs(other, "acme", self.SECRET)  # ... but not acme's

    @pytest.mark.parametrize(
        "foreign",
        [
            "",
            "chatcmpl-9A8b7C6d5E4f3G2h1",  # OpenAI's own shape
            "chatcmpl-18bcfe56800-2-0123456789abcdef",  # no tag (the old shape)
            "chatcmpl-18bcfe56800-2",  # no random part
            "chatcmpl-18bcfe56800-2-0123456789ABCDEF-0123456789abcdef",  # upper-case hex
            "chatcmpl-18bcfe56800-12345-0123456789abcdef-0123456789abcdef",  # partition too long
            "chatcmpl-18bcfe56800-2-0123456789abcdef-0123456789abcdef-extra",
            "xchatcmpl-18bcfe56800-2-0123456789abcdef-0123456789abcdef",
            "chatcmpl-18bcfe56800-2-0123456789abcdef-0123456789abcdef\n",
        ],
    )
    def test_foreign_ids_are_rejected(self, foreign: str) -> None:
        assert parse_request_id(foreign) is None
        assert not request_belongs(foreign, "acme", self.SECRET)

    def test_fits_the_event_envelope(self) -> None:
        request_id = new_request_id(9999, 2**47, "t" * 128, self.SECRET)
        assert CancelRequested(request_id=request_id).request_id == request_id


class TestErrorCode:
    EXPECTED_RETRYABLE: ClassVar[dict[ErrorCode, bool]] = {
        ErrorCode.INVALID_REQUEST: False,
        ErrorCode.INTERNAL: False,
        ErrorCode.BACKEND_ERROR: True,
        ErrorCode.BACKEND_TIMEOUT: True,
        ErrorCode.BACKEND_UNAVAILABLE: True,
        ErrorCode.WORKER_LOST: True,
        ErrorCode.STREAM_TIMEOUT: True,
        ErrorCode.OVERLOADED: True,
        ErrorCode.DEADLINE_EXCEEDED: True,
    }

    def test_every_code_has_a_decided_retryable_flag(self) -> None:
        assert set(ErrorCode) == set(self.EXPECTED_RETRYABLE)  # a new code needs a decision here
        assert {code: code.retryable for code in ErrorCode} == self.EXPECTED_RETRYABLE

    def test_values_are_the_wire_strings(self) -> None:
        assert ErrorCode("worker_lost") is ErrorCode.WORKER_LOST
        assert json.loads(json.dumps({"code": ErrorCode.INTERNAL})) == {"code": "internal_error"}


def _schema_text(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class TestSchemaSnapshots:
    """A change to an event's JSON Schema must be a deliberate, reviewed one."""

    @pytest.mark.parametrize("model", EVENT_CLASSES, ids=[c.__name__ for c in EVENT_CLASSES])
    def test_schema_matches_the_committed_snapshot(self, model: type[BaseModel]) -> None:
        path = SCHEMAS / f"{model.__name__}.json"
        current = _schema_text(model)
        if os.environ.get("UPDATE_SCHEMAS") == "1":
            path.write_text(current, encoding="utf-8")
        hint = (
            f"{model.__name__}'s JSON Schema differs from {path.name}: breaking change? "
            "bump schema_version, then regenerate with "
            "`UPDATE_SCHEMAS=1 pytest tests/unit/contracts`"
        )
        assert path.exists(), hint
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(current), hint

    def test_no_snapshot_without_an_event(self) -> None:
        names = {path.stem for path in SCHEMAS.glob("*.json")}
        assert names == {c.__name__ for c in EVENT_CLASSES}


class TestDeltaFastPath:
    """`delta_json` skips the model on the per-token path; it must say what the model says."""

    @pytest.mark.parametrize("content", ["plain", ' "quoted" \\ back\nslash', "日本語 ü 🙂", ""])
    @pytest.mark.parametrize("first", [True, False])
    def test_it_decodes_to_the_same_delta_the_model_would_make(self, content: str, first: bool):
        raw = delta_json(REQUEST_ID, 7, "att-1", content, first)
        event = STREAM_EVENT.validate_json(raw)
        expected = Delta(
            request_id=REQUEST_ID,
            seq=7,
            attempt="att-1",
            content=content,
            role="assistant" if first else None,
            event_id=event.event_id,
            ts=event.ts,
        )
        assert event == expected
        assert json.loads(raw) == json.loads(expected.model_dump_json())
