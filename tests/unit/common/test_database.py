"""The shared engine and migrations: Alembic revisions build exactly the tables the services
use, and a rebuild of the usage branch empties only usage."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from services.analytics.store import MIGRATION_BRANCH, UsageStore, metadata, row_of, usage
from services.common.database import MIGRATIONS, alembic_config, make_engine, migrate
from services.gateway.conversations.sealing import DEV_KEYRING, Sealer
from services.gateway.conversations.store import ConversationStore
from services.gateway.conversations.store import metadata as conversations_metadata
from services.gateway.responses.store import ResponseStore, StoredResponse
from services.gateway.responses.store import metadata as responses_metadata
from services.tenants.schema import metadata as tenants_metadata
from services.tenants.store import TenantStore
from tests.usage_events import usage_events

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_heads_match_the_table_definitions(database_url: str) -> None:
    engine = make_engine(database_url)
    await migrate(engine)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_server_default": True}),
                [metadata, tenants_metadata, responses_metadata, conversations_metadata],
            )
        )
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    await engine.dispose()
    assert diff == []
    assert set(tables) == {
        "usage",
        "tenants",
        "api_keys",
        "rate_counters",
        "stream_leases",
        "responses",
        "conversations",
        "conversation_items",
        "alembic_version",
    }


async def test_migrating_twice_keeps_data_and_a_rebuild_empties_only_usage(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/deep/dir/m.db")  # folders are made
    await migrate(engine)
    store, tenants = UsageStore(engine), TenantStore(engine, b"pepper")
    await store.insert(usage_events(3))
    _, key = await tenants.create_key("acme")
    stored = StoredResponse(
        "resp_1", "acme", "chatcmpl-1", NOW, NOW + timedelta(hours=1), False, {"m": 1}, []
    )
    await ResponseStore(engine).add(stored)
    conversations = ConversationStore(engine, Sealer.from_keyring(DEV_KEYRING))
    conversation, _ = await conversations.create("acme", {}, [{"type": "message"}])
    await migrate(engine)
    assert await store.count() == 3
    await migrate(engine, rebuild_branch=MIGRATION_BRANCH)
    assert await store.count() == 0
    principal = await tenants.principal(key)  # keys cannot be rebuilt from Kafka: they stay
    assert principal is not None and principal.tenant == "acme"
    assert await ResponseStore(engine).get("resp_1", "acme") == stored  # nor responses
    assert await conversations.get(conversation.id, "acme") == conversation  # nor conversations
    await engine.dispose()


def _upgrade(config: Config, connection: Connection, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_usage_rows_from_before_the_api_column_are_chat(database_url: str) -> None:
    engine = make_engine(database_url)
    config = alembic_config(database_url)
    async with engine.begin() as conn:  # the schema as it was before revision 0004
        await conn.run_sync(lambda sync: _upgrade(config, sync, "0001"))
        old = row_of(usage_events(1)[0])
        del old["api"]
        await conn.execute(usage.insert().values(old))
    await migrate(engine)
    new = usage_events(2)[1].model_copy(update={"api": "responses"})
    assert await UsageStore(engine).insert([new]) == 1
    async with engine.connect() as conn:
        rows = (await conn.execute(select(usage.c.api).order_by(usage.c.id))).scalars().all()
    await engine.dispose()
    assert rows == ["chat", "responses"]


async def test_processes_migrating_one_sqlite_file_at_once_do_not_collide(
    tmp_path: Path,
) -> None:
    # The gateways and analytics all migrate at start; on SQLite nothing else serialises them.
    engines = [make_engine(f"sqlite+aiosqlite:///{tmp_path}/race.db") for _ in range(4)]
    await asyncio.gather(*(migrate(e) for e in engines))
    for engine in engines:
        await engine.dispose()


def test_the_migrations_ship_inside_the_package() -> None:
    assert MIGRATIONS.parent.name == "common"
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()
    assert list((MIGRATIONS / "versions").glob("0001_*.py"))
    assert list((MIGRATIONS / "versions").glob("0002_*.py"))
    assert list((MIGRATIONS / "versions").glob("0003_*.py"))
    assert list((MIGRATIONS / "versions").glob("0004_*.py"))
    assert list((MIGRATIONS / "versions").glob("0005_*.py"))
