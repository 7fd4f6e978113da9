"""Integration fixtures: per-test topics on the session broker, and a plain producer."""

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from contracts import TOPICS, Topics
from services.common.kafka import ensure_topics


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> Topics:
    topics = TOPICS.with_prefix(topic_prefix)
    await ensure_topics(kafka_bootstrap, topics)
    return topics


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    yield producer
    await producer.stop()
