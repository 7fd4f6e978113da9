"""Alembic environment: runs on the connection `database.migrate` hands over, or opens its own.

The revisions define their tables inline, so no service is imported here; the table metadata
is needed only by `--autogenerate`, which takes it from `config.attributes["target_metadata"]`
(`tests/unit/common/test_database.py` compares the heads with the services' tables)."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from services.common.database import make_engine

config = context.config
target_metadata = config.attributes.get("target_metadata")


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite alters tables by copying them; the same revisions run on both.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called from the service, inside its event loop
        _run(connection)
        return
    # the `alembic` command line: no loop is running yet
    asyncio.run(_run_with_own_engine(config.get_main_option("sqlalchemy.url") or ""))


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
