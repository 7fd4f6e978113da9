"""Feeds one watcher from Kafka alone: a request's events since it began, then the live tail.

The request id names the partition and the creation time, so any gateway node can serve a
resume or a watch: `offsets_for_times` finds where to start, and no second store is needed.
"""

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contracts import STREAM_EVENT, RequestRef
from services.common.kafka import assigned_consumer
from services.common.redact import validation_summary
from services.fanout.hub import Subscription

log = structlog.get_logger("fanout")

# Producer and gateway clocks may differ a little: start reading a bit before the id's time.
CLOCK_SKEW_MS = 5_000


class HistoryReader:
    """One short-lived consumer (assigned partition, no group) for one watcher."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        ref: RequestRef,
        sub: Subscription,
        client_id: str,
        stall_s: float = 10.0,
    ) -> None:
        self._stall_s = stall_s
        self._bootstrap = bootstrap
        self._tp = TopicPartition(topic, ref.partition)
        self._ref = ref
        self._sub = sub
        self._key = sub.request_id.encode()
        self._client_id = client_id
        self.found = asyncio.Event()  # an event of the request was seen
        self.caught_up = asyncio.Event()  # read past what the partition held at the start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"history-{self._sub.request_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_found(self, timeout_s: float) -> bool:
        """Whether the request has events; gives up early on an old id with none."""
        async with asyncio.timeout(timeout_s):
            found = asyncio.ensure_future(self.found.wait())
            caught_up = asyncio.ensure_future(self.caught_up.wait())
            try:
                await asyncio.wait({found, caught_up}, return_when=asyncio.FIRST_COMPLETED)
                if self.found.is_set():
                    return True
                if self._ref.age_ms() > timeout_s * 1000:
                    return False  # long past its start and nothing in the log: no such request
                await found
                return True
            except TimeoutError:
                return False
            finally:
                found.cancel()
                caught_up.cancel()

    async def _run(self) -> None:
        consumer = assigned_consumer(self._bootstrap, self._client_id)
        try:
            await consumer.start()
            consumer.assign([self._tp])
            # The end first: a record published while the start is looked up lies past it.
            end = (await consumer.end_offsets([self._tp]))[self._tp]
            await self._seek(consumer, end)
            while not self._sub.finished:
                batches = await consumer.getmany(self._tp, timeout_ms=500, max_records=500)
                for record in batches.get(self._tp, ()):
                    await self._offer(record.key, record.value)
                if not self.caught_up.is_set() and await consumer.position(self._tp) >= end:
                    self.caught_up.set()
        finally:
            # Shielded: `stop()` may be cancelled again while the consumer closes (its caller
            # was cancelled too), and a close cut short leaks the consumer's connections (the
            # soak found 16 in 770 resumes).
            await asyncio.shield(consumer.stop())

    async def _seek(self, consumer: AIOKafkaConsumer, end: int) -> None:
        start_ms = max(0, self._ref.created_ms - CLOCK_SKEW_MS)
        found = (await consumer.offsets_for_times({self._tp: start_ms}))[self._tp]
        # Nothing since then: only the future, from the end as it was before the lookup (a
        # lazy seek_to_end would be resolved at the first fetch, past a `started` that came
        # meanwhile, and every later event of that attempt would then be dropped).
        consumer.seek(self._tp, end if found is None else found.offset)

    async def _offer(self, key: bytes | None, value: bytes | None) -> None:
        if key != self._key or value is None:
            return
        try:
            event = STREAM_EVENT.validate_json(value)
        except ValidationError as exc:
            log.error(
                "malformed_stream_event",
                request_id=self._sub.request_id,
                error=validation_summary(exc),
            )
            return
        self.found.set()
        # This consumer serves one watcher: wait for it (bounded) instead of dropping a burst.
        await self._sub.offer_waiting(event, self._stall_s)
