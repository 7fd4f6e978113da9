"""Stream events a worker publishes per request: started, delta..., completed | failed."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

from contracts.base import Event
from contracts.errors import ErrorCode


class TokenUsage(BaseModel):
    """Token counts as the backend reported them (or as counted, when `estimated`)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0, description="Tokens in the prompt")
    completion_tokens: int = Field(default=0, ge=0, description="Tokens generated")
    total_tokens: int = Field(default=0, ge=0, description="Sum of both")
    estimated: bool = Field(default=False, description="True when counted, not from the backend")
    prompt_tokens_details: dict[str, int] | None = Field(
        default=None, description="The backend's breakdown, e.g. cached_tokens, passed through"
    )
    completion_tokens_details: dict[str, int] | None = Field(
        default=None, description="The backend's breakdown, e.g. reasoning_tokens, passed through"
    )


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


class ToolCallPiece(BaseModel):
    """A piece of one tool call, as OpenAI streams it: the first piece of an index carries its
    id, type and function name; the pieces after it carry argument fragments to append."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0, description="Which tool call of the answer this piece belongs to")
    id: str | None = Field(default=None, description="The call's id, on its first piece")
    type: Literal["function"] | None = Field(default=None, description="On its first piece")
    name: str | None = Field(default=None, description="The function's name, on its first piece")
    arguments: str = Field(default="", description="A fragment of the JSON arguments")


class Delta(_StreamEventBase):
    """One or more pieces of the answer (several when the worker coalesces), all of one kind:
    text, tool-call pieces, refusal text, or reasoning text. Plain text uses `content` only,
    so the common event stays as small as it was."""

    type: Literal["delta"] = "delta"
    content: str = Field(default="", description="Text to append to the answer")
    role: Literal["assistant"] | None = Field(default=None, description="Set on the first delta")
    tool_calls: tuple[ToolCallPiece, ...] | None = Field(
        default=None, description="Tool-call pieces, in the backend's order"
    )
    refusal: str | None = Field(default=None, description="Refusal text to append")
    reasoning: str | None = Field(
        default=None, description="Reasoning text to append (`reasoning_content` on the wire)"
    )
    logprobs: dict[str, JsonValue] | None = Field(
        default=None, description="OpenAI's choice logprobs for these tokens, when asked for"
    )

    @model_serializer(mode="wrap")
    def _without_unset_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Absent, not null: a plain-text delta serialises exactly as before these fields came
        # (and as `delta_json` writes it), so the common event stays as small as it was.
        data: dict[str, Any] = handler(self)
        for name in _EXTRAS:
            if data.get(name, 0) is None:
                del data[name]
        return data

    @property
    def plain(self) -> bool:
        """Only text: renderers take their per-token fast path."""
        return (
            self.tool_calls is None
            and self.refusal is None
            and self.reasoning is None
            and self.logprobs is None
        )


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


_EXTRAS = ("tool_calls", "refusal", "reasoning", "logprobs")


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
