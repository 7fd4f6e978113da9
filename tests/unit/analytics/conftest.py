"""An analytics app on a fresh SQLite file, migrated, without Kafka (no lifespan)."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.app import create_app
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import UsageStore
from services.common.database import migrate


@pytest.fixture
async def analytics_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    apps: list[FastAPI] = []

    async def make(**settings: Any) -> FastAPI:
        settings = {"auth_mode": "open", **settings}  # keys mode has tests of its own
        app = create_app(
            AnalyticsSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db", **settings)
        )
        await migrate(app.state.engine)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.state.engine.dispose()


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def store(app: FastAPI) -> UsageStore:
    return app.state.store  # type: ignore[no-any-return]
