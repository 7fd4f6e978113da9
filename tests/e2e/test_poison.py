"""Malformed bytes and wrong-schema events on every topic a service consumes: each ends in a
dead-letter topic with its reason, no service crashes, and the next good request works."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts import TOPICS, DeadLetter
from tests.e2e.helpers import stream_text
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

POISON = [b"\xff\xfe not json", b'{"type": "unheard_of", "request_id": "x"}', b"[]"]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    sys_ = System(
        kafka_bootstrap,
        f"x{uuid.uuid4().hex[:8]}.",
        logs_dir,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "0"},
    )
    sys_.start(workers=1)
    yield sys_
    sys_.stop()


async def _inject(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"poison", partition=partition)
    finally:
        await producer.stop()


async def _letters(bootstrap: str, dlq: str, source: str, count: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(
        dlq, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[DeadLetter] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        letter = DeadLetter.model_validate_json(record.value)
                        if letter.source_topic == source:
                            found.append(letter)
    finally:
        await consumer.stop()
    return found


async def _still_serves(system: System) -> None:
    messages = [{"role": "user", "content": "still there?"}]
    text, usage, _ = await stream_text(system.gateway_url, messages, max_tokens=5)
    direct, _, _ = await stream_text(system.llmsim_url, messages, model="x", max_tokens=5)
    assert text == direct and usage.completion_tokens == 5
    async with httpx.AsyncClient() as client:
        for proc in system.processes():
            assert (await client.get(f"{proc.url}/readyz")).status_code == 200, proc.name


@pytest.mark.parametrize(
    ("source", "dlq"),
    [("requests", "requests_dlq"), ("control", "requests_dlq"), ("tokens", "tokens_dlq")],
)
async def test_poison_is_dead_lettered_with_its_reason_and_the_next_good_message_works(
    system: System, source: str, dlq: str
):
    topics = TOPICS.with_prefix(system.prefix)
    source_topic = getattr(topics, source).name
    await _inject(system.bootstrap, source_topic, POISON)
    letters = await _letters(system.bootstrap, getattr(topics, dlq).name, source_topic, len(POISON))
    assert sorted(letter.value for letter in letters) == sorted(
        p.decode("utf-8", errors="backslashreplace") for p in POISON
    )
    assert all(letter.reason and letter.key == "poison" for letter in letters)
    await _still_serves(system)
