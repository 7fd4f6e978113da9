"""Alembic environment: runs on the connection `migrate.py` hands over, or opens its own."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from services.analytics.store import make_engine, metadata
from services.tenants.schema import metadata as tenants_metadata

config = context.config
target_metadata = [metadata, tenants_metadata]


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
