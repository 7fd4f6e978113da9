"""The `usage` table and its writer: one row per (request_id, attempt), inserted idempotently."""

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from contracts import UsageRecorded


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones: it stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    UniqueConstraint("request_id", "attempt", name="uq_usage_request_attempt"),
    Index("ix_usage_started_at", "started_at"),
    Index("ix_usage_tenant_started_at", "tenant_id", "started_at"),
)

CONFLICT_KEYS = ("request_id", "attempt")


def row_of(event: UsageRecorded) -> dict[str, Any]:
    """The `usage` row of one event."""
    return {
        "event_id": str(event.event_id),
        "request_id": event.request_id,
        "attempt": event.attempt,
        "tenant_id": event.tenant_id,
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


def make_engine(url: str) -> AsyncEngine:
    """An async engine; for a SQLite file, its folder is created and WAL lets readers in."""
    parsed = make_url(url)
    # < 32k bound parameters; errors never echo row values (or key hashes) into logs.
    options: dict[str, Any] = {"insertmanyvalues_page_size": 500, "hide_parameters": True}
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, **options)
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        options["poolclass"] = StaticPool  # one connection, or each would see its own database
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, **options)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: the API reads while the consumer writes; synchronous stays FULL, so a commit
    # that returned survives a power cut (offsets are committed to Kafka right after).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


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
