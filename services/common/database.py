"""The SQL every service shares: the async engine factory, the `UtcDateTime` column type and
the Alembic runner over `migrations/` (one schema, branches `usage` and `tenants`)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Dialect, TypeDecorator, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

# Next to this module, so it works from an installed wheel, not only from the repo root.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant: several processes starting at once (gateways, analytics) migrate in turn.
_PG_LOCK = 0x70CE4B05


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
    # Several processes share the file (gateways, analytics): a writer waits its turn for up
    # to this long, instead of sqlite3's 5 s (four nodes migrating at once on a busy machine
    # took longer and failed with "database is locked").
    options["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **options)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: the API reads while the consumer writes; synchronous stays FULL, so a commit
    # that returned survives a power cut (offsets are committed to Kafka right after).
    cursor.execute("PRAGMA journal_mode=WAL")
    # Several processes (gateways, analytics) migrate and write one file: wait for the lock
    # rather than fail, as a loaded machine can hold it for seconds.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(url: str) -> Config:
    """An Alembic config without an ini file; `alembic` CLI users can build the same.

    `migrations/env.py` imports no service: for `--autogenerate`, put the table metadata in
    `config.attributes["target_metadata"]`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    return config


async def migrate(engine: AsyncEngine, *, rebuild_branch: str | None = None) -> None:
    """Bring the schema to its heads; with `rebuild_branch`, first migrate that branch down to
    nothing (its tables and rows are dropped; other branches stay)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.run_sync(_apply, config, rebuild_branch)


def _apply(connection: Connection, config: Config, rebuild_branch: str | None) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    elif connection.dialect.name == "sqlite":
        # Take the write lock first: the gateways and analytics may migrate one file at once,
        # and a deferred transaction would only find out at its first CREATE TABLE.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    config.attributes["connection"] = connection
    if rebuild_branch is not None:
        command.downgrade(config, f"{rebuild_branch}@base")
    command.upgrade(config, "heads")
