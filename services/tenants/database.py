"""Open the tenant store on the shared database, migrated to the current schema."""

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.database import make_engine, migrate
from services.tenants.settings import TenantStoreSettings
from services.tenants.store import TenantStore


def pepper(settings: TenantStoreSettings) -> bytes:
    return settings.key_pepper.get_secret_value().encode()


async def migrated_engine(database_url: str) -> AsyncEngine:
    """An engine on `database_url` whose schema is at head (idempotent, safe to race)."""
    engine = make_engine(database_url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


@contextlib.asynccontextmanager
async def open_store(settings: TenantStoreSettings) -> AsyncIterator[TenantStore]:
    engine = await migrated_engine(settings.database_url)
    try:
        yield TenantStore(engine, pepper(settings))
    finally:
        await engine.dispose()
