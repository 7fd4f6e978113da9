"""Session fixtures: a real Kafka broker, PostgreSQL, unique topic prefixes, tokenbus systems."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capabilities import POSTGRESQL, missing_capability, summarise
from tests.kafka_broker import session_broker
from tests.postgres import find_bin_dir, fresh_database, session_postgres


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which capabilities (PostgreSQL, Chromium) were missing and what it skipped."""
    summarise(terminalreporter)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with session_broker(tmp_path_factory.mktemp("broker")) as bootstrap:
        yield bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """Per-test topics, so tests share one broker without seeing each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL (asyncpg): `TEST_POSTGRES_URL`/`DATABASE_URL`, else our own."""
    if not (os.environ.get("TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL")):
        if find_bin_dir() is None:
            missing_capability(*POSTGRESQL)  # a skip, or a failure under CI=true
    with session_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database per test, on each backend analytics supports."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'analytics.db'}"
    return await fresh_database(request.getfixturevalue("postgres_server"))
