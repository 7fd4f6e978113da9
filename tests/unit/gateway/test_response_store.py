"""The response index on each database backend: round trip, tenancy, delete, expiry, purge."""

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.database import make_engine, migrate
from services.gateway.responses.store import ResponseStore, StoredResponse, responses

NOW = datetime.now(UTC).replace(microsecond=0)
SHELL: dict[str, Any] = {
    "model": "small",
    "instructions": "Be brief. «Ünïcode» stays.",
    "tools": [{"type": "function", "name": "add", "parameters": {"type": "object"}}],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "metadata": {"k": "v"},
    "temperature": 0.5,
    "top_p": None,
    "max_output_tokens": 64,
    "text": {"format": {"type": "text"}},
    "store": True,
}
INPUT: list[dict[str, Any]] = [
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    {"type": "function_call_output", "call_id": "call_1", "output": '{"sum": 3}'},
]


def stored(response_id: str = "resp_1", **changes: Any) -> StoredResponse:
    response = StoredResponse(
        id=response_id,
        tenant="acme",
        request_id=f"chatcmpl-{response_id}",
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
        background=False,
        shell=SHELL,
        input_items=INPUT,
    )
    return replace(response, **changes)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> ResponseStore:
    return ResponseStore(engine)


async def test_a_response_comes_back_as_it_was_stored(store: ResponseStore) -> None:
    response = stored(background=True)
    await store.add(response)
    found = await store.get("resp_1", "acme")
    assert found == response
    assert found.created_at.tzinfo is not None  # aware UTC on SQLite too


async def test_another_tenant_or_an_unknown_id_finds_nothing(store: ResponseStore) -> None:
    await store.add(stored())
    assert await store.get("resp_1", "globex") is None
    assert await store.get("resp_2", "acme") is None
    assert not await store.delete("resp_1", "globex")  # and cannot delete it either
    assert await store.get("resp_1", "acme") is not None


async def test_a_deleted_response_is_gone_and_keeps_no_content(
    store: ResponseStore, engine: AsyncEngine
) -> None:
    await store.add(stored())
    assert await store.delete("resp_1", "acme")
    assert await store.get("resp_1", "acme") is None
    assert not await store.delete("resp_1", "acme")
    async with engine.connect() as conn:
        row = (await conn.execute(select(responses))).one()
    assert (row.shell, row.input_items) == ({}, [])
    assert row.deleted_at is not None


async def test_an_expired_response_is_gone(store: ResponseStore) -> None:
    await store.add(stored(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert await store.get("resp_1", "acme") is None
    assert not await store.delete("resp_1", "acme")


async def test_purge_removes_the_expired_and_the_deleted_only(
    store: ResponseStore, engine: AsyncEngine
) -> None:
    await store.add(stored("resp_old", expires_at=NOW - timedelta(hours=1)))
    await store.add(stored("resp_due", expires_at=NOW + timedelta(hours=1)))
    await store.add(stored("resp_gone"))
    await store.add(stored("resp_live"))
    await store.delete("resp_gone", "acme")
    # At NOW + 1 h, resp_due expires too (expires_at <= now).
    assert await store.purge_expired(NOW + timedelta(hours=1)) == 3
    async with engine.connect() as conn:
        ids = (await conn.execute(select(responses.c.id))).scalars().all()
    assert ids == ["resp_live"]
    assert await store.purge_expired() == 0
    assert await store.get("resp_live", "acme") == stored("resp_live")
