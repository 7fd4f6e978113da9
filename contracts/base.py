"""The envelope every tokenbus event carries: type, schema version, ids and a timestamp."""

from datetime import UTC, datetime
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only clock events use)."""
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event; subclasses narrow `type` to a Literal."""

    # Frozen so an event cannot change between validation and publishing; extra fields are
    # ignored so older consumers tolerate fields added later (see docs/architecture.md).
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str = Field(description="Event type name; the discriminator of unions")
    schema_version: int = Field(default=1, ge=1, description="Bumped on a breaking change")
    event_id: UUID = Field(default_factory=uuid4, description="Dedup key for exactly-once effects")
    request_id: str = Field(min_length=1, max_length=128, description="The chat request's id")
    ts: AwareDatetime = Field(default_factory=utcnow, description="When the event was made (UTC)")
