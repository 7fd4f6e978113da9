"""Stream events a worker publishes per request: started, delta..., completed | failed."""

import json
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.base import Event
from contracts.errors import ErrorCode


class TokenUsage(BaseModel):
    """Token counts as the backend reported them (or as counted, when `estimated`)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0, description="Tokens in the prompt")
    completion_tokens: int = Field(default=0, ge=0, description="Tokens generated")
    total_tokens: int = Field(default=0, ge=0, description="Sum of both")
    estimated: bool = Field(default=False, description="True when counted, not from the backend")


class _StreamEventBase(Event):
    seq: int = Field(ge=0, description="Position in the request's stream, from 0")
    attempt: str = Field(description="Id of the worker attempt that produced the event")


class Started(_StreamEventBase):
    """The worker is trying a backend. More than one before any delta means a retry or a
    fallback to another backend or tier; the last one before the first delta answers."""

    type: Literal["started"] = "started"
    model: str = Field(description="Concrete model that answers")
    tier: str = Field(description="Tier the request was routed to")
    backend: str = Field(default="", description="Backend name within the tier")
    route_reason: str = Field(default="explicit", description="Why this tier: explicit | score")
    route_score: float | None = Field(default=None, description="Complexity score, for `auto`")
    route_features: tuple[str, ...] = Field(default=(), description="Top features of the score")
    try_no: int = Field(default=0, ge=0, description="Backend tries before this one")
    retry_reason: str | None = Field(default=None, description="Error code of the previous try")
    created: int = Field(description="Unix time of the generation, as in OpenAI's `created`")
    include_usage: bool = Field(
        default=False,
        description="Echo of the request's include_usage, so any node can "
        "render a resumed stream exactly as the original",
    )


class Delta(_StreamEventBase):
    """One or more tokens of the answer (several when the worker coalesces)."""

    type: Literal["delta"] = "delta"
    content: str = Field(description="Text to append to the answer")
    role: Literal["assistant"] | None = Field(default=None, description="Set on the first delta")


class Completed(_StreamEventBase):
    """The answer ended normally (or was cancelled)."""

    type: Literal["completed"] = "completed"
    finish_reason: str = Field(description="stop | length | content_filter | cancelled | ...")
    usage: TokenUsage = Field(description="Token counts of the whole answer")


class Failed(_StreamEventBase):
    """The answer cannot be finished; the client should retry if `retryable`."""

    type: Literal["failed"] = "failed"
    code: ErrorCode = Field(description="Machine-readable reason")
    message: str = Field(description="Human-readable reason; never contains secrets")
    retryable: bool = Field(description="Whether sending the request again may succeed")
    usage: TokenUsage | None = Field(default=None, description="Partial usage, if any")


def delta_json(request_id: str, seq: int, attempt: str, content: str, first: bool) -> bytes:
    """A `Delta` serialised without building the model: this runs once per token. It is the
    same JSON the model gives (tests compare them); keep the two in step."""
    return (
        f'{{"type":"delta","schema_version":1,"event_id":"{uuid4()}",'
        f'"request_id":{_json_str(request_id)},"ts":"{_iso_now()}","seq":{seq},'
        f'"attempt":{_json_str(attempt)},"content":{_json_str(content)},'
        f'"role":{_ROLE_FIRST if first else "null"}}}'
    ).encode()


_ROLE_FIRST = '"assistant"'


def _json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _iso_now() -> str:
    # pydantic's form of an aware UTC datetime: ISO 8601 with a "Z" suffix.
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


StreamEvent = Annotated[Started | Delta | Completed | Failed, Field(discriminator="type")]
STREAM_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)

TERMINAL_TYPES = frozenset({"completed", "failed"})
