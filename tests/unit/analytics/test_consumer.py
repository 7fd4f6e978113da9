"""UsageSink: store a batch in one go, dead-letter what cannot be stored, then commit."""

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.exc import DataError, OperationalError

from contracts import UsageRecorded
from services.analytics.consumer import UsageSink, next_offsets
from services.analytics.store import UsageStore
from services.common.database import make_engine, migrate
from tests.fakes import eventually
from tests.usage_events import usage_events

TOPIC = "llm.usage"


def _record(partition: int, offset: int, value: bytes | None) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        TOPIC, partition, offset, 0, 0, b"acme", value, None, 4, len(value or b""), ()
    )


def _records(events: list[UsageRecorded], partitions: int = 2) -> list[ConsumerRecord[Any, Any]]:
    return [
        _record(n % partitions, n // partitions, e.model_dump_json().encode())
        for n, e in enumerate(events)
    ]


class Recorder:
    """The sink's outputs: dead letters, commits and counts."""

    def __init__(self) -> None:
        self.letters: list[tuple[int, str]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.counts: Counter[str] = Counter()

    async def dead_letter(self, record: ConsumerRecord[Any, Any], reason: str) -> None:
        self.letters.append((record.offset, reason))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets)

    def count(self, outcome: str, n: int) -> None:
        self.counts[outcome] += n


@pytest.fixture
async def store(tmp_path: Path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/sink.db")
    await migrate(engine)
    yield UsageStore(engine)
    await engine.dispose()


class TestBatches:
    async def test_a_batch_is_stored_then_each_partition_committed_past_it(self, store) -> None:
        out = Recorder()
        took: list[float] = []
        sink = UsageSink(store, out.dead_letter, out.count, took.append)
        events = usage_events(9)
        await sink.handle(_records(events), out.commit)
        assert await store.count() == 9
        assert out.commits == [{TopicPartition(TOPIC, 0): 5, TopicPartition(TOPIC, 1): 4}]
        assert out.counts == {"stored": 9, "duplicates": 0, "dead_lettered": 0}
        assert len(took) == 1 and took[0] > 0  # one batch timed, once it was committed

    async def test_a_redelivered_batch_changes_nothing_but_is_committed(self, store) -> None:
        out = Recorder()
        sink = UsageSink(store, out.dead_letter, out.count)
        records = _records(usage_events(6))
        await sink.handle(records, out.commit)
        await sink.handle(records, out.commit)
        assert await store.count() == 6
        assert out.counts["duplicates"] == 6 and len(out.commits) == 2

    async def test_invalid_records_are_dead_lettered_and_committed_past(self, store) -> None:
        out = Recorder()
        sink = UsageSink(store, out.dead_letter, out.count)
        [event] = usage_events(1)
        records = [
            _record(0, 0, b"{oops"),
            _record(0, 1, None),  # a tombstone
            _record(0, 2, b'{"type": "chat_requested"}'),
            _record(0, 3, event.model_dump_json().encode()),
        ]
        await sink.handle(records, out.commit)
        assert [offset for offset, _ in out.letters] == [0, 1, 2]
        assert all(reason.startswith("invalid UsageRecorded") for _, reason in out.letters)
        assert await store.count() == 1
        assert out.commits == [{TopicPartition(TOPIC, 0): 4}]


class FlakyStore:
    """Raises `error` for the first `failures` inserts, or for any batch holding `poison`."""

    def __init__(self, store: UsageStore, failures: int = 0, poison: str | None = None) -> None:
        self._store, self.failures, self.poison, self.calls = store, failures, poison, 0

    async def insert(self, events: list[UsageRecorded]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("INSERT", {}, ConnectionRefusedError("db down"))
        if any(e.request_id == self.poison for e in events):
            raise DataError("INSERT", {}, ValueError("invalid byte sequence"))
        return await self._store.insert(events)


class TestDatabaseFailures:
    async def test_an_outage_is_waited_out_and_nothing_is_committed_before(self, store) -> None:
        out = Recorder()
        flaky = FlakyStore(store, failures=2)
        sink = UsageSink(flaky, out.dead_letter, out.count)  # type: ignore[arg-type]
        await sink.handle(_records(usage_events(4)), out.commit)
        assert flaky.calls == 3 and await store.count() == 4
        assert len(out.commits) == 1 and out.letters == []

    async def test_a_row_the_database_refuses_is_dead_lettered_the_rest_stored(self, store) -> None:
        out = Recorder()
        events = usage_events(5)
        sink = UsageSink(FlakyStore(store, poison=events[2].request_id), out.dead_letter, out.count)  # type: ignore[arg-type]
        await sink.handle(_records(events, partitions=1), out.commit)
        assert await store.count() == 4
        [(offset, reason)] = out.letters
        assert offset == 2 and reason.startswith("database refused the row")
        assert out.commits == [{TopicPartition(TOPIC, 0): 5}]

    async def test_draining_during_an_outage_leaves_the_batch_uncommitted(self, store) -> None:
        out = Recorder()
        flaky = FlakyStore(store, failures=10**6)
        sink = UsageSink(flaky, out.dead_letter, out.count)  # type: ignore[arg-type]
        handling = asyncio.create_task(sink.handle(_records(usage_events(3)), out.commit))

        async def in_the_outage() -> bool:
            return flaky.calls >= 1  # the batch's insert failed: the sink waits it out

        await eventually(in_the_outage, within=2)
        await asyncio.wait_for(sink.drain(), timeout=2)
        await handling
        assert out.commits == [] and await store.count() == 0
        await sink.handle(_records(usage_events(3)), out.commit)  # closed: takes nothing new
        assert out.commits == []


def test_next_offsets_is_one_past_the_highest_per_partition() -> None:
    records = [_record(1, 7, b""), _record(0, 3, b""), _record(1, 9, b""), _record(1, 8, b"")]
    assert next_offsets(records) == {TopicPartition(TOPIC, 0): 4, TopicPartition(TOPIC, 1): 10}
