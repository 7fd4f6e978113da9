"""Malformed bytes and wrong-schema events on every topic a service consumes: each ends in a
dead-letter topic with its reason, no service crashes, and the next good request works."""

from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts import TOPICS, DeadLetter
from tests.e2e.helpers import stream_text
from tests.kafka_records import Record, record_events
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

POISON = [b"\xff\xfe not json", b'{"type": "unheard_of", "request_id": "x"}', b"[]"]


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap, logs_dir, tag="x", llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "0"}
    ) as sys_:
        yield sys_


async def _inject(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"poison", partition=partition)
    finally:
        await producer.stop()


def _letters_from(source: str, records: Sequence[Record]) -> list[DeadLetter]:
    letters = (DeadLetter.model_validate_json(record.value) for record in records)
    return [letter for letter in letters if letter.source_topic == source]


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
    async with record_events(
        system.bootstrap,
        getattr(topics, dlq).name,
        expect=lambda records: len(_letters_from(source_topic, records)) >= len(POISON),
    ) as dead:
        await _inject(system.bootstrap, source_topic, POISON)
    letters = _letters_from(source_topic, dead.records)
    assert sorted(letter.value for letter in letters) == sorted(
        p.decode("utf-8", errors="backslashreplace") for p in POISON
    )
    assert all(letter.reason and letter.key == "poison" for letter in letters)
    await _still_serves(system)
