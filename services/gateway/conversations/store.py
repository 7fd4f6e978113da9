"""ConversationStore: conversations and their items in SQL, every item and summary sealed.

A row holds the tenant, times, metadata and positions in the clear; the content of each item
(the JSON OpenAI shows) and the running summary are sealed by a `Sealer`, with the row as AAD:
`{conv_id}/{item_id}` and `{conv_id}/summary`, so a blob moved to another row does not open.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.database import UtcDateTime
from services.gateway.conversations.sealing import Sealer

metadata = MetaData()

# Revision 0005 (branch `conversations`) creates them; tests/unit/common compares the two.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),  # the public `conv_...` id
    Column("tenant", String(128), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),  # last write: listing order, idle purge
    Column("metadata", JSON, nullable=False),  # the API's metadata: short strings, in the clear
    Column("summary", LargeBinary),  # sealed UTF-8 text of the running summary
    # Items with position < summary_upto are folded into the summary.
    Column("summary_upto", Integer, nullable=False, server_default="0"),
    Column("summary_turns", Integer, nullable=False, server_default="0"),
    # The lease that lets one request at a time (across gateways) add to the conversation.
    Column("busy_request", String(80)),
    Column("busy_until", UtcDateTime),
    Index("ix_conversations_tenant_updated_at", "tenant", "updated_at"),
)

conversation_items = Table(
    "conversation_items",
    metadata,
    Column(
        "conversation_id",
        String(64),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("id", String(64), nullable=False),  # the item's own id (`msg_...`, `fc_...`)
    # 0.. in conversation order; appends go after the last one (and never under summary_upto).
    Column("position", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sealed", LargeBinary, nullable=False),  # the sealed JSON of the whole item
    PrimaryKeyConstraint("conversation_id", "id"),
    UniqueConstraint(
        "conversation_id", "position", name="uq_conversation_items_conversation_id_position"
    ),
)

# Generated item ids: the prefix OpenAI uses for the type, then 48 hex digits.
_ID_PREFIXES = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
}
_SUMMARY = "summary"  # the AAD suffix of the summary, so never an item id
_ID_MAX = 64
_IN_CHUNK = 500  # ids per IN (...) when purging: well under every backend's parameter limit


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation as its tenant sees it; `summary` is opened."""

    id: str
    tenant: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str]
    summary: str | None
    summary_upto: int
    summary_turns: int


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a conversation; `data` is the item as OpenAI shows it (with its "id")."""

    id: str
    position: int
    created_at: datetime
    data: dict[str, Any]


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(24)}"


def new_item_id(item_type: str | None) -> str:
    return f"{_ID_PREFIXES.get(item_type or '', 'item')}_{secrets.token_hex(24)}"


def _owned(conv_id: str, tenant: str) -> ColumnElement[bool]:
    # Another tenant's conversation is indistinguishable from a missing one: ids do not leak.
    return (conversations.c.id == conv_id) & (conversations.c.tenant == tenant)


def _with_ids(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the items, each with an id (generated when absent); ValueError for an id that
    cannot be stored or is given twice."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in items:
        item = dict(item)
        item_id = item.get("id")
        if item_id is None:
            item_id = item["id"] = new_item_id(item.get("type"))
        if not isinstance(item_id, str) or not 0 < len(item_id) <= _ID_MAX:
            raise ValueError(f"an item id is a string of 1 to {_ID_MAX} characters")
        if item_id == _SUMMARY or item_id in seen:
            raise ValueError(f"item id {item_id!r} is reserved or given twice")
        seen.add(item_id)
        out.append(item)
    return out


class ConversationStore:
    """Conversations of tenants; every method sees only the tenant's own."""

    def __init__(self, engine: AsyncEngine, sealer: Sealer) -> None:
        self.engine = engine
        self.sealer = sealer

    # -- conversations ------------------------------------------------------------------------

    async def create(
        self, tenant: str, metadata: dict[str, str], items: list[dict[str, Any]]
    ) -> tuple[Conversation, list[Item]]:
        """A new conversation holding `items` at positions 0.. in order."""
        conv_id, now = new_conversation_id(), datetime.now(UTC)
        with_ids = _with_ids(items)
        row = {
            "id": conv_id,
            "tenant": tenant,
            "created_at": now,
            "updated_at": now,
            "metadata": metadata,
            "summary": None,
            "summary_upto": 0,
            "summary_turns": 0,
        }
        async with self.engine.begin() as conn:
            await conn.execute(conversations.insert().values(row))
            added = await self._insert_items(conn, conv_id, 0, with_ids, now)
        conversation = Conversation(conv_id, tenant, now, now, dict(metadata), None, 0, 0)
        return conversation, added

    async def get(self, conv_id: str, tenant: str) -> Conversation | None:
        """The tenant's conversation; None when missing or another tenant's."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(conversations).where(_owned(conv_id, tenant)))).first()
        return None if row is None else self._conversation(row)

    async def list_recent(
        self, tenant: str, limit: int, after: str | None
    ) -> tuple[list[Conversation], bool]:
        """The tenant's conversations, most recently updated first, and whether more follow.
        `after` is the last id of the previous page; an unknown one gives an empty page."""
        order = (conversations.c.updated_at.desc(), conversations.c.id.desc())
        query = select(conversations).where(conversations.c.tenant == tenant)
        async with self.engine.connect() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(conversations.c.updated_at).where(_owned(after, tenant))
                    )
                ).scalar_one_or_none()
                if cursor is None:
                    return [], False
                query = query.where(
                    or_(
                        conversations.c.updated_at < cursor,
                        and_(conversations.c.updated_at == cursor, conversations.c.id < after),
                    )
                )
            rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).all()
        return [self._conversation(row) for row in rows[:limit]], len(rows) > limit

    async def update_metadata(
        self, conv_id: str, tenant: str, metadata: dict[str, str]
    ) -> Conversation | None:
        """Replace the metadata; None when the conversation is not the tenant's."""
        statement = (
            update(conversations)
            .where(_owned(conv_id, tenant))
            .values(metadata=metadata, updated_at=datetime.now(UTC))
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return None
            row = (await conn.execute(select(conversations).where(_owned(conv_id, tenant)))).one()
        return self._conversation(row)

    async def delete(self, conv_id: str, tenant: str) -> bool:
        """Delete the conversation, its items and summary at once; False if get() finds none."""
        async with self.engine.begin() as conn:
            deleted = await conn.execute(delete(conversations).where(_owned(conv_id, tenant)))
            if deleted.rowcount != 1:
                return False
            # SQLite enforces no foreign keys unless asked: the cascade is not relied on.
            items = conversation_items.c.conversation_id == conv_id
            await conn.execute(delete(conversation_items).where(items))
        return True

    async def purge_idle(self, older_than: datetime) -> int:
        """Delete the conversations (and items) not updated since `older_than`, except those a
        request holds now; return how many there were."""
        now = datetime.now(UTC)
        statement = (
            delete(conversations)
            .where(
                conversations.c.updated_at < older_than,
                or_(conversations.c.busy_until.is_(None), conversations.c.busy_until <= now),
            )
            .returning(conversations.c.id)
        )
        async with self.engine.begin() as conn:
            ids = list((await conn.execute(statement)).scalars())
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                await conn.execute(
                    delete(conversation_items).where(
                        conversation_items.c.conversation_id.in_(chunk)
                    )
                )
        return len(ids)

    # -- items --------------------------------------------------------------------------------

    async def add_items(
        self, conv_id: str, tenant: str, items: list[dict[str, Any]]
    ) -> list[Item] | None:
        """Append the items after the last position, all or none; None when the conversation is
        not the tenant's. ValueError for an id the conversation already has."""
        with_ids, now = _with_ids(items), datetime.now(UTC)
        async with self.engine.begin() as conn:
            # Writing first locks the row (PostgreSQL) or the database (SQLite): concurrent
            # appends to one conversation take their positions in turn.
            bump = update(conversations).where(_owned(conv_id, tenant)).values(updated_at=now)
            if (await conn.execute(bump)).rowcount != 1:
                return None
            ids = [item["id"] for item in with_ids]
            taken = select(conversation_items.c.id).where(
                conversation_items.c.conversation_id == conv_id, conversation_items.c.id.in_(ids)
            )
            if ids and (await conn.execute(taken.limit(1))).first() is not None:
                raise ValueError("an item id is already in the conversation")
            # After the last item, and never under summary_upto: an item appended after the
            # summarised ones were deleted is not taken as summarised.
            last = select(func.max(conversation_items.c.position)).where(
                conversation_items.c.conversation_id == conv_id
            )
            upto = select(conversations.c.summary_upto).where(conversations.c.id == conv_id)
            highest = (await conn.execute(last)).scalar_one_or_none()
            following = 0 if highest is None else highest + 1
            start = max(following, (await conn.execute(upto)).scalar_one())
            return await self._insert_items(conn, conv_id, start, with_ids, now)

    async def items(
        self,
        conv_id: str,
        tenant: str,
        *,
        limit: int,
        order: Literal["asc", "desc"],
        after: str | None,
    ) -> tuple[list[Item], bool] | None:
        """A page of items in position order and whether more follow; `after` is the last item
        id of the previous page (an unknown one gives an empty page). None when the
        conversation is not the tenant's."""
        position = conversation_items.c.position
        query = select(conversation_items).where(conversation_items.c.conversation_id == conv_id)
        async with self.engine.connect() as conn:
            if not await self._owns(conn, conv_id, tenant):
                return None
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(position).where(
                            conversation_items.c.conversation_id == conv_id,
                            conversation_items.c.id == after,
                        )
                    )
                ).scalar_one_or_none()
                if cursor is None:
                    return [], False
                query = query.where(position > cursor if order == "asc" else position < cursor)
            query = query.order_by(position.asc() if order == "asc" else position.desc())
            rows = (await conn.execute(query.limit(limit + 1))).all()
        return [self._item(conv_id, row) for row in rows[:limit]], len(rows) > limit

    async def items_since(self, conv_id: str, tenant: str, position: int) -> list[Item] | None:
        """Every item at `position` or later, in order (the history after the summary)."""
        query = (
            select(conversation_items)
            .where(
                conversation_items.c.conversation_id == conv_id,
                conversation_items.c.position >= position,
            )
            .order_by(conversation_items.c.position)
        )
        async with self.engine.connect() as conn:
            if not await self._owns(conn, conv_id, tenant):
                return None
            rows = (await conn.execute(query)).all()
        return [self._item(conv_id, row) for row in rows]

    async def get_item(self, conv_id: str, item_id: str, tenant: str) -> Item | None:
        query = select(conversation_items).where(
            conversation_items.c.conversation_id == conv_id,
            conversation_items.c.id == item_id,
            exists().where(_owned(conv_id, tenant)),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else self._item(conv_id, row)

    async def delete_item(self, conv_id: str, item_id: str, tenant: str) -> bool:
        """Delete one item; False when get_item finds none."""
        statement = delete(conversation_items).where(
            conversation_items.c.conversation_id == conv_id,
            conversation_items.c.id == item_id,
            exists().where(_owned(conv_id, tenant)),
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return False
            bump = update(conversations).where(conversations.c.id == conv_id)
            await conn.execute(bump.values(updated_at=datetime.now(UTC)))
        return True

    # -- summary and lease --------------------------------------------------------------------

    async def set_summary(
        self, conv_id: str, tenant: str, summary: str, upto: int, turns: int
    ) -> bool:
        """Store a summary of the items before position `upto`; only moves forward: False when
        the stored summary reaches as far already (or the conversation is not the tenant's)."""
        sealed = self.sealer.seal(summary.encode(), f"{conv_id}/{_SUMMARY}".encode())
        statement = (
            update(conversations)
            .where(_owned(conv_id, tenant), conversations.c.summary_upto < upto)
            .values(summary=sealed, summary_upto=upto, summary_turns=turns)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def acquire(self, conv_id: str, tenant: str, request_id: str, lease_s: float) -> bool:
        """Hold the conversation for `request_id` for `lease_s` seconds: True when it was free,
        its lease had expired or this request held it already (a renewal). One conditional
        UPDATE, so gateways in several processes take it in turn."""
        now = datetime.now(UTC)
        statement = (
            update(conversations)
            .where(
                _owned(conv_id, tenant),
                or_(
                    conversations.c.busy_request.is_(None),
                    conversations.c.busy_until <= now,
                    conversations.c.busy_request == request_id,
                ),
            )
            .values(busy_request=request_id, busy_until=now + timedelta(seconds=lease_s))
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def release(self, conv_id: str, request_id: str) -> None:
        """Free the conversation, if `request_id` still holds it."""
        statement = (
            update(conversations)
            .where(conversations.c.id == conv_id, conversations.c.busy_request == request_id)
            .values(busy_request=None, busy_until=None)
        )
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    # -- rows ---------------------------------------------------------------------------------

    async def _owns(self, conn: AsyncConnection, conv_id: str, tenant: str) -> bool:
        query = select(conversations.c.id).where(_owned(conv_id, tenant))
        return (await conn.execute(query)).first() is not None

    async def _insert_items(
        self,
        conn: AsyncConnection,
        conv_id: str,
        start: int,
        items: list[dict[str, Any]],
        now: datetime,
    ) -> list[Item]:
        added = [Item(item["id"], start + n, now, item) for n, item in enumerate(items)]
        if added:
            rows = [
                {
                    "conversation_id": conv_id,
                    "id": item.id,
                    "position": item.position,
                    "created_at": now,
                    "sealed": self.sealer.seal_json(item.data, f"{conv_id}/{item.id}".encode()),
                }
                for item in added
            ]
            await conn.execute(conversation_items.insert(), rows)
        return added

    def _conversation(self, row: Row[Any]) -> Conversation:
        summary = None
        if row.summary is not None:
            summary = self.sealer.open(row.summary, f"{row.id}/{_SUMMARY}".encode()).decode()
        return Conversation(
            row.id,
            row.tenant,
            row.created_at,
            row.updated_at,
            row.metadata,
            summary,
            row.summary_upto,
            row.summary_turns,
        )

    def _item(self, conv_id: str, row: Row[Any]) -> Item:
        data = self.sealer.open_json(row.sealed, f"{conv_id}/{row.id}".encode())
        return Item(row.id, row.position, row.created_at, data)
