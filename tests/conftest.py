"""Session fixtures: a real Kafka broker, unique topic prefixes, and running tokenbus systems."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import session_broker


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
