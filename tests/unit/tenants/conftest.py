"""A migrated tenant store on each database backend (SQLite file, PostgreSQL)."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tenants.database import migrated_engine
from services.tenants.store import TenantStore


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = await migrated_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> TenantStore:
    return TenantStore(engine, b"test-pepper")
