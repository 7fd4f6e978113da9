"""Conversations on each database backend: round trips, tenancy, pagination, deletes, the
summary, the request lease, the idle purge, and sealing at rest."""

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.database import make_engine, migrate
from services.gateway.conversations.sealing import DEV_KEYRING, Sealer, SealError
from services.gateway.conversations.store import (
    ConversationStore,
    Item,
    conversation_items,
    conversations,
)

SECRET = "The launch code is ZEBRA-7741"


def message(text: str, role: str = "user", **extra: Any) -> dict[str, Any]:
    content = [{"type": "input_text" if role == "user" else "output_text", "text": text}]
    return {"type": "message", "role": role, "content": content, **extra}


CALL: dict[str, Any] = {
    "type": "function_call",
    "call_id": "call_1",
    "name": "add",
    "arguments": '{"a": 1, "b": 2}',
}
OUTPUT: dict[str, Any] = {"type": "function_call_output", "call_id": "call_1", "output": "3"}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> ConversationStore:
    return ConversationStore(engine, Sealer.from_keyring(DEV_KEYRING))


async def count(engine: AsyncEngine, conv_id: str | None = None) -> tuple[int, int]:
    """(conversations, items) rows, of one conversation or of all."""
    convs, items = select(func.count()).select_from(conversations), select(func.count())
    items = items.select_from(conversation_items)
    if conv_id is not None:
        convs = convs.where(conversations.c.id == conv_id)
        items = items.where(conversation_items.c.conversation_id == conv_id)
    async with engine.connect() as conn:
        return (await conn.execute(convs)).scalar_one(), (await conn.execute(items)).scalar_one()


async def set_updated_at(engine: AsyncEngine, conv_id: str, when: datetime) -> None:
    async with engine.begin() as conn:
        statement = update(conversations).where(conversations.c.id == conv_id)
        await conn.execute(statement.values(updated_at=when))


async def test_a_conversation_and_its_items_come_back_as_created(
    store: ConversationStore,
) -> None:
    before = datetime.now(UTC)
    conv, items = await store.create(
        "acme", {"topic": "«Ünïcode»"}, [message("hi"), CALL, OUTPUT, message("x", id="msg_mine")]
    )
    assert re.fullmatch(r"conv_[0-9a-f]{48}", conv.id)
    assert (conv.tenant, conv.metadata, conv.summary) == ("acme", {"topic": "«Ünïcode»"}, None)
    assert (conv.summary_upto, conv.summary_turns) == (0, 0)
    assert before <= conv.created_at == conv.updated_at <= datetime.now(UTC)
    assert [item.position for item in items] == [0, 1, 2, 3]
    prefixes = [item.id.split("_")[0] for item in items]
    assert prefixes == ["msg", "fc", "fco", "msg"] and items[3].id == "msg_mine"
    assert all(re.fullmatch(r"[a-z]+_[0-9a-f]{48}", item.id) for item in items[:3])
    assert all(item.data["id"] == item.id for item in items)
    assert items[1].data == {**CALL, "id": items[1].id}
    assert "id" not in CALL  # the caller's dicts are not changed

    found = await store.get(conv.id, "acme")
    assert found == conv
    assert found.created_at.tzinfo is not None  # aware UTC on SQLite too
    page = await store.items(conv.id, "acme", limit=10, order="asc", after=None)
    assert page == (items, False)
    assert await store.get_item(conv.id, items[2].id, "acme") == items[2]
    assert await store.items_since(conv.id, "acme", 2) == items[2:]
    assert await store.items_since(conv.id, "acme", 9) == []


async def test_an_empty_conversation_can_be_created(store: ConversationStore) -> None:
    conv, items = await store.create("acme", {}, [])
    assert items == []
    assert await store.items(conv.id, "acme", limit=5, order="desc", after=None) == ([], False)


async def test_another_tenant_or_an_unknown_id_finds_nothing_anywhere(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    conv, items = await store.create("acme", {"k": "v"}, [message("hi")])
    item_id = items[0].id
    for conv_id, tenant in ((conv.id, "globex"), ("conv_missing", "acme")):
        assert await store.get(conv_id, tenant) is None
        assert await store.update_metadata(conv_id, tenant, {"k": "stolen"}) is None
        assert await store.add_items(conv_id, tenant, [message("in")]) is None
        assert await store.items(conv_id, tenant, limit=5, order="asc", after=None) is None
        assert await store.items_since(conv_id, tenant, 0) is None
        assert await store.get_item(conv_id, item_id, tenant) is None
        assert not await store.delete_item(conv_id, item_id, tenant)
        assert not await store.set_summary(conv_id, tenant, "stolen", 1, 1)
        assert not await store.acquire(conv_id, tenant, "req_1", 30)
        assert not await store.delete(conv_id, tenant)
    assert await store.list_recent("globex", 10, None) == ([], False)
    assert await store.list_recent("globex", 10, conv.id) == ([], False)  # nor as a cursor
    assert await store.get(conv.id, "acme") == conv  # untouched
    assert await store.get_item(conv.id, item_id, "acme") == items[0]
    assert await count(engine) == (1, 1)


async def test_recent_conversations_page_newest_first(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    ids = []
    for n in range(5):
        conv, _ = await store.create("acme", {"n": str(n)}, [])
        await set_updated_at(engine, conv.id, base + timedelta(minutes=n))
        ids.append(conv.id)
    await store.create("globex", {}, [])
    ids.reverse()  # newest first

    first, more = await store.list_recent("acme", 2, None)
    assert ([c.id for c in first], more) == (ids[:2], True)
    second, more = await store.list_recent("acme", 2, first[-1].id)
    assert ([c.id for c in second], more) == (ids[2:4], True)
    third, more = await store.list_recent("acme", 2, second[-1].id)
    assert ([c.id for c in third], more) == (ids[4:], False)
    everything, more = await store.list_recent("acme", 5, None)
    assert ([c.id for c in everything], more) == (ids, False)
    assert await store.list_recent("acme", 2, "conv_unknown") == ([], False)

    # Adding to the oldest makes it the most recent.
    await store.add_items(ids[-1], "acme", [message("back again")])
    page, _ = await store.list_recent("acme", 1, None)
    assert page[0].id == ids[-1]


async def test_equal_update_times_still_page_without_gaps_or_repeats(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    when = datetime.now(UTC).replace(microsecond=0)
    ids = set()
    for _ in range(5):
        conv, _ = await store.create("acme", {}, [])
        await set_updated_at(engine, conv.id, when)
        ids.add(conv.id)
    seen: list[str] = []
    after, more = None, True
    while more:
        page, more = await store.list_recent("acme", 2, after)
        seen += [c.id for c in page]
        after = page[-1].id
    assert sorted(seen) == sorted(ids) and len(seen) == 5


async def test_metadata_is_replaced_and_the_update_time_moves(
    store: ConversationStore,
) -> None:
    conv, _ = await store.create("acme", {"a": "1"}, [])
    updated = await store.update_metadata(conv.id, "acme", {"b": "2"})
    assert updated is not None
    assert updated.metadata == {"b": "2"}
    assert updated.created_at == conv.created_at and updated.updated_at >= conv.updated_at
    assert await store.get(conv.id, "acme") == updated


async def test_items_are_appended_after_the_last_position(
    store: ConversationStore,
) -> None:
    conv, _ = await store.create("acme", {}, [message("one"), message("two")])
    added = await store.add_items(conv.id, "acme", [message("three", "assistant"), CALL])
    assert added is not None
    assert [item.position for item in added] == [2, 3]
    assert [item.id.split("_")[0] for item in added] == ["msg", "fc"]
    assert await store.add_items(conv.id, "acme", []) == []
    found = await store.get(conv.id, "acme")
    assert found is not None and found.updated_at >= conv.updated_at
    everything = await store.items_since(conv.id, "acme", 0)
    assert everything is not None
    assert [i.position for i in everything] == [0, 1, 2, 3]
    assert everything[2:] == added
    assert everything[2].data["content"][0]["text"] == "three"


async def test_an_item_id_cannot_be_given_twice_or_be_reserved(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    conv, _ = await store.create("acme", {}, [message("one", id="msg_1")])
    with pytest.raises(ValueError, match="already in the conversation"):
        await store.add_items(conv.id, "acme", [message("two"), message("again", id="msg_1")])
    with pytest.raises(ValueError, match="given twice"):
        await store.add_items(conv.id, "acme", [message("a", id="m"), message("b", id="m")])
    with pytest.raises(ValueError, match="reserved"):
        await store.add_items(conv.id, "acme", [message("a", id="summary")])
    with pytest.raises(ValueError, match="1 to 64"):
        await store.create("acme", {}, [message("a", id="x" * 65)])
    assert await count(engine) == (1, 1)  # all or nothing


async def test_concurrent_appends_take_distinct_positions(
    store: ConversationStore,
) -> None:
    conv, _ = await store.create("acme", {}, [message("start")])
    batches = await asyncio.gather(
        *(store.add_items(conv.id, "acme", [message(f"{n}a"), message(f"{n}b")]) for n in range(5))
    )
    positions = sorted(item.position for batch in batches for item in batch or [])
    assert positions == list(range(1, 11))
    for batch in batches:  # each batch is contiguous
        assert batch is not None and batch[1].position == batch[0].position + 1


async def test_items_page_in_both_orders(store: ConversationStore) -> None:
    conv, items = await store.create("acme", {}, [message(str(n)) for n in range(5)])
    ids = [item.id for item in items]

    async def walk(order: Any) -> list[tuple[list[str], bool]]:
        pages, after = [], None
        while True:
            result = await store.items(conv.id, "acme", limit=2, order=order, after=after)
            assert result is not None
            page, more = result
            pages.append(([i.id for i in page], more))
            if not more:
                return pages
            after = page[-1].id

    assert await walk("asc") == [(ids[0:2], True), (ids[2:4], True), (ids[4:], False)]
    backwards = ids[::-1]
    assert await walk("desc") == [
        (backwards[0:2], True),
        (backwards[2:4], True),
        (backwards[4:], False),
    ]
    exact = await store.items(conv.id, "acme", limit=5, order="asc", after=None)
    assert exact is not None and exact[1] is False
    assert await store.items(conv.id, "acme", limit=2, order="asc", after="msg_x") == ([], False)
    last = await store.items(conv.id, "acme", limit=2, order="asc", after=ids[-1])
    assert last == ([], False)


async def test_deleting_an_item_removes_only_it(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    conv, items = await store.create("acme", {}, [message("a"), message("b"), message("c")])
    other, _ = await store.create("acme", {}, [message("a", id=items[1].id)])  # same item id
    assert await store.delete_item(conv.id, items[1].id, "acme")
    assert not await store.delete_item(conv.id, items[1].id, "acme")
    assert await store.get_item(conv.id, items[1].id, "acme") is None
    assert await store.items_since(conv.id, "acme", 0) == [items[0], items[2]]
    assert await count(engine, conv.id) == (1, 2)
    assert await count(engine, other.id) == (1, 1)  # the other conversation's item stays
    # Deleting the last item does not let an append slip under the summarised positions.
    assert await store.set_summary(conv.id, "acme", "a, b and c", 3, 1)
    assert await store.delete_item(conv.id, items[2].id, "acme")
    added = await store.add_items(conv.id, "acme", [message("d")])
    assert added is not None and added[0].position == 3


async def test_deleting_a_conversation_removes_its_items_and_summary(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    conv, _ = await store.create("acme", {}, [message("a"), CALL, OUTPUT])
    kept, _ = await store.create("acme", {}, [message("stays")])
    await store.set_summary(conv.id, "acme", "a summary", 2, 1)
    assert await count(engine, conv.id) == (1, 3)
    assert await store.delete(conv.id, "acme")
    assert await count(engine, conv.id) == (0, 0)
    assert await store.get(conv.id, "acme") is None
    assert await store.items(conv.id, "acme", limit=5, order="asc", after=None) is None
    assert not await store.delete(conv.id, "acme")
    assert await count(engine) == (1, 1)
    assert await store.get(kept.id, "acme") is not None


async def test_the_summary_only_moves_forward(store: ConversationStore) -> None:
    conv, _ = await store.create("acme", {}, [message(str(n)) for n in range(6)])
    assert not await store.set_summary(conv.id, "acme", "nothing yet", 0, 0)
    assert await store.set_summary(conv.id, "acme", "0 to 3, «Ünïcode»", 4, 1)
    assert not await store.set_summary(conv.id, "acme", "an older one", 2, 2)
    assert not await store.set_summary(conv.id, "acme", "the same reach", 4, 2)
    found = await store.get(conv.id, "acme")
    assert found is not None
    assert (found.summary, found.summary_upto, found.summary_turns) == ("0 to 3, «Ünïcode»", 4, 1)
    assert await store.set_summary(conv.id, "acme", "0 to 5", 6, 2)
    found = await store.get(conv.id, "acme")
    assert found is not None
    assert (found.summary, found.summary_upto, found.summary_turns) == ("0 to 5", 6, 2)
    page, _ = await store.list_recent("acme", 1, None)
    assert page[0].summary == "0 to 5"


async def test_one_request_at_a_time_holds_a_conversation(store: ConversationStore) -> None:
    conv, _ = await store.create("acme", {}, [])
    assert await store.acquire(conv.id, "acme", "req_1", 30)
    assert not await store.acquire(conv.id, "acme", "req_2", 30)
    assert await store.acquire(conv.id, "acme", "req_1", 30)  # the holder renews
    await store.release(conv.id, "req_2")  # not the holder: nothing happens
    assert not await store.acquire(conv.id, "acme", "req_2", 30)
    await store.release(conv.id, "req_1")
    assert await store.acquire(conv.id, "acme", "req_2", 30)
    await store.release(conv.id, "req_2")
    await store.release(conv.id, "req_2")  # twice is harmless

    results = await asyncio.gather(
        *(store.acquire(conv.id, "acme", f"req_{n}", 30) for n in range(10, 16))
    )
    assert sorted(results) == [False] * 5 + [True]


async def test_an_expired_lease_can_be_taken(store: ConversationStore) -> None:
    conv, _ = await store.create("acme", {}, [])
    assert await store.acquire(conv.id, "acme", "req_crashed", 0.05)
    assert not await store.acquire(conv.id, "acme", "req_2", 30)
    await asyncio.sleep(0.1)
    assert await store.acquire(conv.id, "acme", "req_2", 30)
    await store.release(conv.id, "req_crashed")  # too late: it no longer holds it
    assert not await store.acquire(conv.id, "acme", "req_3", 30)


async def test_purge_removes_idle_conversations_and_their_items(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    idle, _ = await store.create("acme", {}, [message("old"), message("older")])
    other, _ = await store.create("globex", {}, [message("old too")])
    busy, _ = await store.create("acme", {}, [message("in use")])
    live, _ = await store.create("acme", {}, [message("new")])
    for conv in (idle, other, busy):
        await set_updated_at(engine, conv.id, now - timedelta(days=31))
    assert await store.acquire(busy.id, "acme", "req_1", 60)

    assert await store.purge_idle(now - timedelta(days=30)) == 2
    assert await count(engine) == (2, 2)
    assert await store.get(idle.id, "acme") is None
    assert await store.get(other.id, "globex") is None
    assert await store.get(busy.id, "acme") is not None
    assert await store.get(live.id, "acme") is not None
    assert await store.purge_idle(now - timedelta(days=30)) == 0
    await store.release(busy.id, "req_1")
    assert await store.purge_idle(now - timedelta(days=30)) == 1
    assert await count(engine) == (1, 1)


async def test_nothing_readable_is_stored_and_blobs_stay_in_their_rows(
    store: ConversationStore, engine: AsyncEngine
) -> None:
    conv, items = await store.create("acme", {}, [message(SECRET), message("other words")])
    await store.add_items(conv.id, "acme", [{**CALL, "arguments": f'{{"q": "{SECRET}"}}'}])
    await store.set_summary(conv.id, "acme", f"The user said: {SECRET}", 1, 1)
    async with engine.connect() as conn:
        blobs = list((await conn.execute(select(conversation_items.c.sealed))).scalars())
        blobs.append((await conn.execute(select(conversations.c.summary))).scalar_one())
    assert len(blobs) == 4
    for blob in blobs:
        assert b"ZEBRA" not in blob and b"launch" not in blob and b"words" not in blob

    # A blob copied into another row (item or summary) does not open there.
    async with engine.begin() as conn:
        statement = update(conversation_items).where(
            conversation_items.c.conversation_id == conv.id,
            conversation_items.c.id == items[1].id,
        )
        await conn.execute(statement.values(sealed=blobs[0]))
        await conn.execute(
            update(conversations).where(conversations.c.id == conv.id).values(summary=blobs[0])
        )
    assert await store.get_item(conv.id, items[0].id, "acme") == items[0]
    with pytest.raises(SealError):
        await store.get_item(conv.id, items[1].id, "acme")
    with pytest.raises(SealError):
        await store.get(conv.id, "acme")


async def test_another_keyring_cannot_read_and_a_rotated_one_can(
    engine: AsyncEngine,
) -> None:
    old_ring = "k1:" + "A" * 43 + "="
    new_ring = "k2:" + "B" * 43 + "=," + old_ring
    old = ConversationStore(engine, Sealer.from_keyring(old_ring))
    conv, items = await old.create("acme", {}, [message("before the rotation")])
    rotated = ConversationStore(engine, Sealer.from_keyring(new_ring))
    assert await rotated.get_item(conv.id, items[0].id, "acme") == items[0]
    added = await rotated.add_items(conv.id, "acme", [message("after")])
    assert added is not None
    assert await rotated.items_since(conv.id, "acme", 0) == [*items, *added]
    with pytest.raises(SealError, match="'k2'"):
        await old.items_since(conv.id, "acme", 0)
    with pytest.raises(SealError, match="'k1'"):
        await ConversationStore(engine, Sealer.from_keyring(DEV_KEYRING)).get_item(
            conv.id, items[0].id, "acme"
        )


def file_bytes(folder: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(folder.glob("conversations.db*")))


async def test_a_copied_sqlite_file_reveals_no_transcript(tmp_path: Path) -> None:
    path = tmp_path / "conversations.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    store = ConversationStore(engine, Sealer.from_keyring(DEV_KEYRING))
    conv, _ = await store.create("acme", {"label": "visible"}, [message(SECRET)])
    await store.add_items(conv.id, "acme", [message(f"Remember {SECRET}", "assistant")])
    await store.set_summary(conv.id, "acme", f"Summary: {SECRET}", 1, 1)
    items: list[Item] | None = await store.items_since(conv.id, "acme", 0)
    assert items is not None and SECRET in items[1].data["content"][0]["text"]
    raw = file_bytes(tmp_path)  # the database and its WAL, before a checkpoint
    await engine.dispose()
    raw += file_bytes(tmp_path)  # and after
    assert conv.id.encode() in raw and b"visible" in raw  # the file is what was written
    for word in (b"ZEBRA", b"launch", b"Remember", b"Summary", b"input_text", b"assistant"):
        assert word not in raw
