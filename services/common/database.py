"""Alembic, driven from code: migrate to the heads at start, or drop and recreate the usage
tables for a rebuild (the `tenants` branch, keys and limits, is never dropped)."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

# Next to this module, so it works from an installed wheel, not only from the repo root.
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant: several analytics processes starting at once migrate one after the other.
_PG_LOCK = 0x70CE4B05


def alembic_config(url: str) -> Config:
    """An Alembic config without an ini file; `alembic` CLI users can build the same."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ini interpolation
    return config


async def migrate(engine: AsyncEngine, *, rebuild: bool = False) -> None:
    """Bring the schema to its heads; with `rebuild`, first migrate the usage branch down to
    nothing (drops usage rows; tenants, keys and limits stay)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.run_sync(_apply, config, rebuild)


def _apply(connection: Connection, config: Config, rebuild: bool) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    elif connection.dialect.name == "sqlite":
        # Take the write lock first: the gateways and analytics may migrate one file at once,
        # and a deferred transaction would only find out at its first CREATE TABLE.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    config.attributes["connection"] = connection
    if rebuild:
        command.downgrade(config, "usage@base")
    command.upgrade(config, "heads")
