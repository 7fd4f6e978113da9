"""The usage consumer: a fetched batch is validated, stored in one transaction, then committed."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError

from contracts import UsageRecorded
from services.analytics.store import UsageStore

log = structlog.get_logger("analytics")

CommitFn = Callable[[dict[TopicPartition, int]], Awaitable[None]]
DeadLetterFn = Callable[[ConsumerRecord[Any, Any], str], Awaitable[Any]]
CountFn = Callable[[str, int], None]
Decoded = tuple[ConsumerRecord[Any, Any], UsageRecorded]
Refused = tuple[ConsumerRecord[Any, Any], str]

_MAX_BACKOFF_S = 5.0


def _transient(exc: BaseException) -> bool:
    """The database is away (down, restarting, locked), not refusing this data."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError)


def decode(records: Sequence[ConsumerRecord[Any, Any]]) -> tuple[list[Decoded], list[Refused]]:
    """Split records into valid events and (record, reason) for the dead-letter topic."""
    good: list[Decoded] = []
    bad: list[Refused] = []
    for record in records:
        try:
            good.append((record, UsageRecorded.model_validate_json(record.value or b"")))
        except ValidationError as exc:
            bad.append((record, f"invalid UsageRecorded: {exc}"))
    return good, bad


def next_offsets(records: Sequence[ConsumerRecord[Any, Any]]) -> dict[TopicPartition, int]:
    """Per partition, one past the highest offset: a batch is contiguous from the position."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
    return offsets


class UsageSink:
    """Stores batches of usage records; commits a batch only after its rows are durable.

    A database outage is waited out (nothing is committed meanwhile, so nothing is lost); a
    row the database refuses (bad data) goes to the dead-letter topic with the reason, so one
    record never blocks its partition.
    """

    def __init__(
        self,
        store: UsageStore,
        dead_letter: DeadLetterFn,
        count: CountFn,
        took: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._took = took  # seconds from a batch's arrival to its commit
        self._dead_letter = dead_letter
        self._count = count
        self._lock = asyncio.Lock()
        self._closing = False

    async def handle(
        self, records: Sequence[ConsumerRecord[Any, Any]], commit: CommitFn | None
    ) -> None:
        async with self._lock:
            if self._closing or not records:
                return  # uncommitted: the next owner of the partitions reads them again
            t0 = time.monotonic()
            good, bad = decode(records)
            refused = await self._store_until_durable(good)
            if refused is None:
                return
            for record, reason in [*bad, *refused]:
                await self._dead_letter(record, reason)
            self._count("dead_lettered", len(bad) + len(refused))
            if commit is not None:
                await _commit(commit, next_offsets(records))
            if self._took is not None:
                self._took(time.monotonic() - t0)

    async def drain(self) -> None:
        """Take no new batch; return once the batch being stored (if any) is committed."""
        self._closing = True
        async with self._lock:
            pass

    async def _store_until_durable(self, good: list[Decoded]) -> list[Refused] | None:
        """The refused rows once the rest are stored; None if shutting down first."""
        delay = 0.1
        while not self._closing:
            try:
                return await self._insert(good)
            except Exception as exc:
                if not _transient(exc):
                    raise
                log.warning("store_unavailable", error=str(exc)[:200], retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)
        return None

    async def _insert(self, good: list[Decoded]) -> list[Refused]:
        try:
            new = await self._store.insert([event for _, event in good])
            self._count("stored", new)
            self._count("duplicates", len(good) - new)
            return []
        except (IntegrityError, DataError):
            pass  # one row spoiled the transaction: store the others one by one
        refused: list[Refused] = []
        for record, event in good:
            try:
                new = await self._store.insert([event])
            except (IntegrityError, DataError) as exc:
                refused.append((record, f"database refused the row: {exc.orig}"))
                continue
            self._count("stored", new)
            self._count("duplicates", 1 - new)
        return refused


async def _commit(commit: CommitFn, offsets: dict[TopicPartition, int]) -> None:
    try:
        await commit(offsets)
    except KafkaError as exc:
        # Lost the partitions in a rebalance: the new owner re-reads them, and the rows it
        # finds already stored are skipped (UNIQUE (request_id, attempt)).
        log.warning("commit_failed", error=type(exc).__name__)


def rewind(consumer: Any, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """Seek each partition back to the batch's first record, so it is fetched again."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        first[tp] = min(first.get(tp, record.offset), record.offset)
    for tp, offset in first.items():
        consumer.seek(tp, offset)
