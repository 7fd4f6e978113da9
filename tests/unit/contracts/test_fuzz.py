"""Property-based tests of the contracts: every event survives a JSON round trip, the hand-made
delta JSON equals the model's, and garbage is refused with ValidationError and nothing else."""

import json
from datetime import UTC
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts import (
    CONTROL_EVENT,
    STREAM_EVENT,
    BackendTry,
    CancelRequested,
    ChatRequested,
    ClientAttached,
    ClientDetached,
    Completed,
    DeadLetter,
    Delta,
    ErrorCode,
    Failed,
    Message,
    Started,
    TokenUsage,
    UsageRecorded,
)
from contracts.stream import delta_json
from services.gateway.ws_protocol import WsError, parse_client_message

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

text = st.text(max_size=40)
ids = st.text(min_size=1, max_size=128)
counts = st.integers(min_value=0, max_value=2**53)
floats = st.floats(allow_nan=False, allow_infinity=False)
seconds = st.floats(min_value=0, max_value=1e12, allow_nan=False)
aware = st.datetimes(timezones=st.just(UTC))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | floats | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
envelope = {"request_id": ids, "ts": aware, "schema_version": st.integers(1, 10)}
usage = st.builds(
    TokenUsage,
    prompt_tokens=counts,
    completion_tokens=counts,
    total_tokens=counts,
    estimated=st.booleans(),
)
stream_base = {**envelope, "seq": counts, "attempt": text}
message = st.builds(
    Message,
    role=st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
    content=st.none() | text | st.lists(st.dictionaries(text, json_values, max_size=3), max_size=3),
    name=st.none() | text,
)

EVENTS: dict[type[BaseModel], st.SearchStrategy[Any]] = {
    ChatRequested: st.builds(
        ChatRequested,
        tenant_id=text,
        model=text,
        messages=st.lists(message, min_size=1, max_size=4).map(tuple),
        params=st.dictionaries(text, json_values, max_size=4),
        stream=st.booleans(),
        include_usage=st.booleans(),
        reply_partition=st.integers(0, 10_000),
        deadline=st.none() | aware,
        **envelope,
    ),
    Started: st.builds(
        Started,
        model=text,
        tier=text,
        backend=text,
        route_reason=text,
        route_score=st.none() | floats,
        route_features=st.lists(text, max_size=3).map(tuple),
        try_no=st.integers(0, 100),
        retry_reason=st.none() | text,
        created=st.integers(0, 2**40),
        include_usage=st.booleans(),
        **stream_base,
    ),
    Delta: st.builds(
        Delta, content=st.text(), role=st.sampled_from([None, "assistant"]), **stream_base
    ),
    Completed: st.builds(Completed, finish_reason=text, usage=usage, **stream_base),
    Failed: st.builds(
        Failed,
        code=st.sampled_from(ErrorCode),
        message=text,
        retryable=st.booleans(),
        usage=st.none() | usage,
        **stream_base,
    ),
    CancelRequested: st.builds(CancelRequested, reason=text, **envelope),
    ClientAttached: st.builds(ClientAttached, **envelope),
    ClientDetached: st.builds(ClientDetached, grace_s=seconds, **envelope),
    UsageRecorded: st.builds(
        UsageRecorded,
        attempt=text,
        tenant_id=text,
        route=text,
        route_score=st.none() | floats,
        route_features=st.lists(text, max_size=3).map(tuple),
        tier=text,
        backend=text,
        model=text,
        usage=usage,
        cost_usd=seconds,
        ttft_ms=st.none() | seconds,
        duration_ms=seconds,
        finish_reason=st.none() | text,
        status=st.sampled_from(["ok", "failed", "cancelled"]),
        error_code=st.none() | st.sampled_from(ErrorCode),
        tries=st.lists(
            st.builds(
                BackendTry,
                backend=text,
                model=text,
                tier=text,
                outcome=text,
                duration_ms=seconds,
            ),
            max_size=3,
        ).map(tuple),
        started_at=aware,
        finished_at=aware | st.datetimes(),
        **envelope,
    ),
    DeadLetter: st.builds(
        DeadLetter,
        source_topic=text,
        source_partition=st.integers(-1, 10_000),
        source_offset=counts,
        key=st.none() | text,
        value=st.text(),
        reason=text,
        consumer=text,
        **envelope,
    ),
}
# How consumers read each topic's values: the unions for streams and control, else the model.
READERS: list[TypeAdapter[Any]] = [
    STREAM_EVENT,
    CONTROL_EVENT,
    *(TypeAdapter(m) for m in (ChatRequested, UsageRecorded, DeadLetter)),
]
TYPES = ["chat_requested", "started", "delta", "completed", "failed", "cancel_requested"]
TYPES += ["client_attached", "client_detached", "usage_recorded", "dead_letter", "nope"]


@FUZZ
@given(st.one_of(*EVENTS.values()))
def test_every_event_survives_a_json_round_trip(event: BaseModel) -> None:
    again = type(event).model_validate_json(event.model_dump_json())
    assert again == event


@FUZZ
@given(st.one_of(EVENTS[Started], EVENTS[Delta], EVENTS[Completed], EVENTS[Failed]))
def test_stream_events_round_trip_through_the_union(event: Any) -> None:
    assert STREAM_EVENT.validate_json(event.model_dump_json()) == event


@FUZZ
@given(st.one_of(EVENTS[CancelRequested], EVENTS[ClientAttached], EVENTS[ClientDetached]))
def test_control_events_round_trip_through_the_union(event: Any) -> None:
    assert CONTROL_EVENT.validate_json(event.model_dump_json()) == event


@FUZZ
@given(ids, counts, text, st.text(), st.booleans())
def test_the_hand_made_delta_json_is_the_models(
    request_id: str, seq: int, attempt: str, content: str, first: bool
) -> None:
    event = Delta.model_validate_json(delta_json(request_id, seq, attempt, content, first))
    assert (event.request_id, event.seq, event.attempt, event.content) == (
        request_id,
        seq,
        attempt,
        content,
    )
    assert event.role == ("assistant" if first else None)
    assert json.loads(event.model_dump_json()) == json.loads(
        delta_json(request_id, seq, attempt, content, first)
    ) | {"event_id": str(event.event_id), "ts": json.loads(event.model_dump_json())["ts"]}


def _refuses_cleanly(raw: bytes | str) -> None:
    for reader in READERS:
        try:
            reader.validate_json(raw)
        except ValidationError:
            pass


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_are_refused_with_validation_errors_only(raw: bytes | str) -> None:
    _refuses_cleanly(raw)


garbage_objects = st.dictionaries(
    st.sampled_from(["type", "request_id", "seq", "ts", "usage", "messages", "code"]) | text,
    json_values,
    max_size=8,
).flatmap(lambda d: st.sampled_from(TYPES).map(lambda t: {**d, "type": t}) | st.just(d))


@FUZZ
@given(garbage_objects)
def test_json_objects_of_any_shape_are_refused_with_validation_errors_only(
    garbage: dict[str, Any],
) -> None:
    _refuses_cleanly(json.dumps(garbage))


@FUZZ
@given(st.one_of(*EVENTS.values()), st.data())
def test_a_valid_event_with_one_field_broken_is_refused_cleanly(event: Any, data: Any) -> None:
    body = json.loads(event.model_dump_json())
    name = data.draw(st.sampled_from(sorted(body)))
    body[name] = data.draw(json_values.filter(lambda v: v != body[name]))
    _refuses_cleanly(json.dumps(body))  # it may still be valid: only no other exception


@FUZZ
@given(st.text(max_size=300) | garbage_objects.map(json.dumps) | st.binary(max_size=100))
def test_the_websocket_parser_never_raises(raw: str | bytes) -> None:
    result = parse_client_message(raw)
    assert isinstance(result, WsError) or hasattr(result, "type")
