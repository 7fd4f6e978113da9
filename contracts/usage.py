"""UsageRecorded: one per finished request attempt, for analytics; never prompt or answer text."""

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from contracts.base import Event
from contracts.errors import ErrorCode
from contracts.stream import TokenUsage


class UsageRecorded(Event):
    """What one request attempt cost, published to `llm.usage` keyed by `tenant_id`."""

    type: Literal["usage_recorded"] = "usage_recorded"
    attempt: str = Field(description="Worker attempt id; (request_id, attempt) is unique")
    tenant_id: str = Field(description="Tenant billed")
    route: str = Field(description="How the tier was chosen: explicit | score")
    route_score: float | None = Field(default=None, description="Complexity score, for `auto`")
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
    started_at: AwareDatetime = Field(description="When the worker took the request")
    finished_at: datetime = Field(description="When the last event was published")
