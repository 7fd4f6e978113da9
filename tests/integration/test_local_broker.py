"""The local KRaft broker starts, gets the registry's topics idempotently, carries a message."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from contracts.topics import TOPICS
from infra.kafka.local import LocalBroker
from services.common.kafka import ensure_topics
from services.procs import free_port
from tests.kafka_records import record_events

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    local = LocalBroker(data_dir, port=port, controller_port=controller_port)
    started = time.monotonic()
    local.start()
    print(f"broker ready in {time.monotonic() - started:.1f}s")  # visible with -s
    yield local
    local.stop()


async def test_ensure_topics_is_idempotent(broker: LocalBroker) -> None:
    topics = TOPICS.with_prefix(f"t-{uuid.uuid4().hex[:8]}.")
    created = await ensure_topics(broker.bootstrap, topics)
    assert sorted(created) == sorted(t.name for t in topics.all())
    assert await ensure_topics(broker.bootstrap, topics) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in topics.all()])
    finally:
        await admin.close()
    counts = {info["topic"]: len(info["partitions"]) for info in described}
    assert counts == {t.name: t.partitions for t in topics.all()}


async def test_message_round_trip(broker: LocalBroker) -> None:
    topics = TOPICS.with_prefix(f"t-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(broker.bootstrap, topics)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        async with record_events(broker.bootstrap, topics.tokens.name, expect=1) as sent:
            await producer.send_and_wait(topics.tokens.name, b"hello", key=b"req-1")
    finally:
        await producer.stop()
    [record] = sent.records
    assert (record.key, record.value) == (b"req-1", b"hello")


def test_stop_ends_the_process(broker: LocalBroker) -> None:
    pid = broker.pid
    assert pid is not None and broker.is_running()
    broker.stop()
    assert not broker.is_running()
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert not broker.pid_file.exists()
