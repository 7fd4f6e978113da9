"""UsageRecorded: one per finished request attempt, for analytics; never prompt or answer text."""

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.base import Event
from contracts.errors import ErrorCode
from contracts.stream import TokenUsage


class BackendTry(BaseModel):
    """One call to one backend within an attempt (retries and fallbacks each add one)."""

    model_config = ConfigDict(frozen=True)

    backend: str = Field(description="Backend name")
    model: str = Field(description="Model asked")
    tier: str = Field(description="Tier of the backend")
    outcome: str = Field(description="ok, cancelled, or the error code that ended the try")
    duration_ms: float = Field(ge=0, description="How long the try took")


class UsageRecorded(Event):
    """What one request attempt cost, published to `llm.usage` keyed by `tenant_id`."""

    type: Literal["usage_recorded"] = "usage_recorded"
    attempt: str = Field(description="Worker attempt id; (request_id, attempt) is unique")
    tenant_id: str = Field(description="Tenant billed")
    api: Literal["chat", "responses"] = Field(
        default="chat", description="The HTTP API that asked: chat completions or Responses"
    )
    summarised_turns: int = Field(
        default=0, ge=0, description="Conversation turns folded into a summary for this request"
    )
    route: str = Field(description="How the tier was chosen: explicit | score")
    route_score: float | None = Field(default=None, description="Complexity score, for `auto`")
    route_features: tuple[str, ...] = Field(default=(), description="Top features of the score")
    tier: str = Field(description="Tier that answered")
    backend: str = Field(description="Backend name within the tier")
    model: str = Field(description="Concrete model that answered")
    usage: TokenUsage = Field(description="Token counts")
    cost_usd: float = Field(default=0.0, ge=0, description="From the tier's prices")
    ttft_ms: float | None = Field(default=None, description="Time to first token, ms")
    duration_ms: float = Field(ge=0, description="From request taken to last event, ms")
    finish_reason: str | None = Field(default=None, description="As in `completed`")
    status: Literal["ok", "failed", "cancelled"] = Field(description="Outcome")
    error_code: ErrorCode | None = Field(default=None, description="Set when status is failed")
    tries: tuple[BackendTry, ...] = Field(default=(), description="Every backend call, in order")
    started_at: AwareDatetime = Field(description="When the worker took the request")
    finished_at: datetime = Field(description="When the last event was published")
