"""Reads a node's reply partitions of `llm.tokens` (assigned, no group) into the hub."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts import STREAM_EVENT
from services.common.kafka import assigned_consumer
from services.common.metrics import reader_lag
from services.common.redact import validation_summary
from services.fanout.hub import Hub

log = structlog.get_logger("fanout")

DeadLetterFn = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]


class ReplyReader:
    """Tails this node's partitions from their end; only watched requests are decoded."""

    def __init__(
        self,
        hub: Hub,
        bootstrap: str,
        topic: str,
        partitions: list[int],
        client_id: str,
        dead_letter: DeadLetterFn | None = None,
        delivered: Callable[[float], None] | None = None,
    ) -> None:
        self._hub = hub
        self._delivered = delivered  # seconds from an event's making to this reader
        # This node is the only reader of its partitions, so it is the one to dead-letter
        # their bad records: each ends in the DLQ once.
        self._dead_letter = dead_letter
        self._partitions = [TopicPartition(topic, p) for p in partitions]
        self._bootstrap, self._client_id = bootstrap, client_id
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False
        self.malformed = 0

    @property
    def partitions(self) -> list[int]:
        return [tp.partition for tp in self._partitions]

    async def start(self) -> None:
        # aiokafka binds to the running loop at construction, so build it here.
        self._consumer = assigned_consumer(
            self._bootstrap, self._client_id, auto_offset_reset="latest"
        )
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_end(*self._partitions)
        # Resolve positions now, so an event published right after startup is not skipped.
        for tp in self._partitions:
            await self._consumer.position(tp)
        self.ready = True
        self._task = asyncio.create_task(self._run(), name="reply-reader")

    async def lag(self) -> dict[TopicPartition, int]:
        """How far behind the end of its partitions this reader is (for the lag gauge)."""
        return await reader_lag(self._consumer) if self._consumer is not None else {}

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=1000, max_records=500)
            except KafkaError as exc:
                log.warning("reply_fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)  # back off from a broker outage, do not spin
                continue
            for records in batches.values():
                for record in records:
                    await self._dispatch(record)
            # Let the watchers' writers drain their buffers between batches.
            await asyncio.sleep(0)

    async def _dispatch(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            event = STREAM_EVENT.validate_json(record.value or b"")
        except ValidationError as exc:
            self.malformed += 1
            log.error("malformed_stream_event", offset=record.offset, error=validation_summary(exc))
            if self._dead_letter is not None:
                await self._dead_letter(record, str(exc))
            return
        if self._delivered is not None and event.type != "delta":
            # started and terminal events only: two per request, never per token
            self._delivered(time.time() - event.ts.timestamp())
        if self._hub.is_watched(event.request_id):
            self._hub.publish(event)
