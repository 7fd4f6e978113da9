"""ResponseStore: the SQL index of stored responses (their events stay in Kafka)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    Index,
    MetaData,
    String,
    Table,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.database import UtcDateTime

metadata = MetaData()

# Revision 0003 (branch `responses`) creates it; tests/unit/common compares the two.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),  # the public `resp_...` id
    Column("tenant", String(128), nullable=False),
    Column("request_id", String(80), nullable=False),  # keys the events in Kafka
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    # Set by DELETE; the row stays until purge_expired, but nothing of its content does.
    Column("deleted_at", UtcDateTime),
    Column("background", Boolean, nullable=False),
    # The request echo of the Response object (model, instructions, tools, ...), opaque here.
    Column("shell", JSON, nullable=False),
    Column("input_items", JSON, nullable=False),
    Index("ix_responses_tenant_created_at", "tenant", "created_at"),
    Index("ix_responses_expires_at", "expires_at"),
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One retrievable response: who owns it, until when, and what its request said."""

    id: str
    tenant: str
    request_id: str
    created_at: datetime
    expires_at: datetime
    background: bool
    shell: dict[str, Any]
    input_items: list[dict[str, Any]]


def _live(response_id: str, tenant: str, now: datetime) -> ColumnElement[bool]:
    # Another tenant's response is indistinguishable from a missing one: ids do not leak.
    return (
        (responses.c.id == response_id)
        & (responses.c.tenant == tenant)
        & responses.c.deleted_at.is_(None)
        & (responses.c.expires_at > now)
    )


class ResponseStore:
    """Responses stored with `store: true`; expired or deleted ones are gone to readers."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, response: StoredResponse) -> None:
        row = {
            "id": response.id,
            "tenant": response.tenant,
            "request_id": response.request_id,
            "created_at": response.created_at,
            "expires_at": response.expires_at,
            "background": response.background,
            "shell": response.shell,
            "input_items": response.input_items,
        }
        async with self.engine.begin() as conn:
            await conn.execute(responses.insert().values(row))

    async def get(self, response_id: str, tenant: str) -> StoredResponse | None:
        """The tenant's live response; None when missing, another tenant's, deleted or expired."""
        query = select(responses).where(_live(response_id, tenant, datetime.now(UTC)))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return StoredResponse(
            row.id,
            row.tenant,
            row.request_id,
            row.created_at,
            row.expires_at,
            row.background,
            row.shell,
            row.input_items,
        )

    async def delete(self, response_id: str, tenant: str) -> bool:
        """Delete the tenant's live response (its content at once); False if get() finds none."""
        now = datetime.now(UTC)
        statement = (
            update(responses)
            .where(_live(response_id, tenant, now))
            .values(deleted_at=now, shell={}, input_items=[])
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Remove the rows of expired and deleted responses; return how many there were."""
        now = now or datetime.now(UTC)
        statement = delete(responses).where(
            or_(responses.c.expires_at <= now, responses.c.deleted_at.is_not(None))
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount
