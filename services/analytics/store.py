"""The `usage` table and its writer: one row per (request_id, attempt), inserted idempotently."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import UsageRecorded
from services.common.database import UtcDateTime

metadata = MetaData()

usage = Table(
    "usage",
    metadata,
    # SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("event_id", String(36), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("attempt", String(64), nullable=False),
    Column("tenant_id", String(128), nullable=False),
    Column("route", String(32), nullable=False),
    Column("route_score", Float),
    Column("route_features", JSON, nullable=False),
    Column("tier", String(32), nullable=False),
    Column("backend", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("total_tokens", BigInteger, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("duration_ms", Float, nullable=False),
    Column("finish_reason", String(32)),
    Column("status", String(16), nullable=False),
    Column("error_code", String(32)),
    Column("tries", JSON, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    # "chat" | "responses"; last because revision 0004 added it (older rows are chat).
    Column("api", String(16), nullable=False, server_default="chat"),
    UniqueConstraint("request_id", "attempt", name="uq_usage_request_attempt"),
    Index("ix_usage_started_at", "started_at"),
    Index("ix_usage_tenant_started_at", "tenant_id", "started_at"),
)

CONFLICT_KEYS = ("request_id", "attempt")
# The Alembic branch that creates `usage` (services/common/migrations): a rebuild drops it.
MIGRATION_BRANCH = "usage"


def row_of(event: UsageRecorded) -> dict[str, Any]:
    """The `usage` row of one event."""
    return {
        "event_id": str(event.event_id),
        "request_id": event.request_id,
        "attempt": event.attempt,
        "tenant_id": event.tenant_id,
        "api": event.api,
        "route": event.route,
        "route_score": event.route_score,
        "route_features": list(event.route_features),
        "tier": event.tier,
        "backend": event.backend,
        "model": event.model,
        "prompt_tokens": event.usage.prompt_tokens,
        "completion_tokens": event.usage.completion_tokens,
        "total_tokens": event.usage.total_tokens,
        "usage_estimated": event.usage.estimated,
        "cost_usd": event.cost_usd,
        "ttft_ms": event.ttft_ms,
        "duration_ms": event.duration_ms,
        "finish_reason": event.finish_reason,
        "status": event.status,
        "error_code": event.error_code.value if event.error_code else None,
        "tries": [t.model_dump(mode="json") for t in event.tries],
        "started_at": event.started_at,
        "finished_at": event.finished_at,
        "recorded_at": datetime.now(UTC),
    }


class UsageStore:
    """Writes usage rows; a row already stored (same request_id and attempt) is skipped."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
        self._insert = (
            dialect.insert(usage)
            .on_conflict_do_nothing(index_elements=list(CONFLICT_KEYS))
            .returning(usage.c.id)
        )

    async def insert(self, events: Sequence[UsageRecorded]) -> int:
        """Store `events` in one transaction; return how many rows were new."""
        if not events:
            return 0
        async with self.engine.begin() as conn:
            result = await conn.execute(self._insert, [row_of(e) for e in events])
            return len(result.all())

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(usage))).scalar_one())

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
            return True
        except (SQLAlchemyError, OSError):  # unreachable: readiness says so, it is not a bug
            return False
