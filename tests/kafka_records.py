"""How tests read Kafka topics: `read_topic` and `record_events`, and no other consumer.

`read_topic` reads a topic (from its start, or from now) until a condition over the records read
so far holds. `record_events` is modelled on hexkit's `KafkaFixture.expect_events`: on entry it
notes the topic's end offsets, before the action in its block; on exit it reads what was
published since then and checks it against the expectation. Both wait on their condition with a
timeout, never a sleep, and a condition not met in time is an AssertionError that lists the
records seen.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from tests.fakes import eventually

__all__ = ["Record", "Recording", "read_topic", "record_events"]

SHOWN = 30  # records listed in a failure, at most


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, record: ConsumerRecord) -> "Record":
        headers = tuple((name, value) for name, value in record.headers or ())
        return cls(record.key, record.value, record.partition, record.offset, headers)

    def __str__(self) -> str:
        value = repr(self.value)
        if len(value) > 300:
            value = f"{value[:300]}..."
        return f"partition {self.partition} offset {self.offset}: key={self.key!r} value={value}"


Condition = Callable[[Sequence[Record]], bool]
# A count of records (at least that many), or a condition over the records read so far.
Expectation = int | Condition


def _condition(expect: Expectation) -> Condition:
    if isinstance(expect, int):
        return lambda records: len(records) >= expect
    return expect


def _describe(expect: Expectation) -> str:
    if isinstance(expect, int):
        return f"at least {expect} record(s)"
    name = getattr(expect, "__name__", "<lambda>")
    return "the condition" if name == "<lambda>" else name


def _failure(topic: str, wanted: str, records: Sequence[Record]) -> AssertionError:
    listed = "\n".join(f"  {record}" for record in records[:SHOWN])
    more = f"\n  ... and {len(records) - SHOWN} more" if len(records) > SHOWN else ""
    return AssertionError(
        f"{topic}: expected {wanted}; saw {len(records)} record(s)"
        + (f":\n{listed}{more}" if records else "")
    )


@asynccontextmanager
async def _consumer(bootstrap: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group that has every partition of `topic`, from its start."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        # Without a group, partitions are assigned once the topic's metadata arrives, which may
        # be after start() returns: a seek before that would do nothing.
        await eventually(_assigned(consumer), within=30)
        yield consumer
    finally:
        await consumer.stop()


def _assigned(consumer: AIOKafkaConsumer) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(consumer.assignment())

    return check


async def _poll(
    consumer: AIOKafkaConsumer,
    add: Callable[[list[Record]], None],
    done: Callable[[], Awaitable[bool]],
    timeout_s: float,
) -> None:
    """Hand what `consumer` reads to `add` until `done()`; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await done():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                add([Record.of(record) for record in batch])


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Expectation,
    timeout_s: float = 30,
    from_beginning: bool = True,
) -> list[Record]:
    """The records of `topic`, read from its start (or from its end now) until `until` (a
    count, or a condition over the records so far) holds: AssertionError after `timeout_s`."""
    condition = _condition(until)
    records: list[Record] = []

    async def done() -> bool:
        return condition(records)

    async with _consumer(bootstrap, topic) as consumer:
        if not from_beginning:
            # Positions fixed now, from the end offsets: a lazy seek_to_end would be resolved
            # at the first fetch, which a leader election can delay past new records.
            ends = await consumer.end_offsets(list(consumer.assignment()))
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
        try:
            await _poll(consumer, records.extend, done, timeout_s)
        except TimeoutError:
            raise _failure(topic, f"{_describe(until)} within {timeout_s}s", records) from None
    return records


class Recording:
    """What `topic` got after the recording began (`async with`): `records`, as read so far.

    On exit it reads up to the topic's end offsets of that moment, then checks `expect`: a count
    is exact (0: nothing was published), a condition is waited for. `wait_for` reads on, in the
    block or after it."""

    def __init__(
        self, bootstrap: str, topic: str, expect: Expectation | None, timeout_s: float
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.expect = expect
        self.timeout_s = timeout_s
        self.records: list[Record] = []
        self.started_at: dict[int, int] = {}  # partition -> its end offset on entry
        self._next: dict[int, int] = {}  # partition -> the offset to read from

    async def __aenter__(self) -> "Recording":
        async with _consumer(self.bootstrap, self.topic) as consumer:
            ends = await consumer.end_offsets(list(consumer.assignment()))
        self.started_at = {tp.partition: offset for tp, offset in ends.items()}
        self._next = dict(self.started_at)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            return  # the block's own error is the one to see
        await self._catch_up()
        if self.expect is None:
            return
        await self.wait_for(self.expect)
        if isinstance(self.expect, int) and len(self.records) != self.expect:
            raise _failure(self.topic, f"exactly {self.expect} new record(s)", self.records)

    async def wait_for(
        self, expect: Expectation, *, timeout_s: float | None = None
    ) -> list[Record]:
        """The records since entry, once `expect` (at least that many, or a condition over
        them) holds; AssertionError listing them if it does not within `timeout_s`."""
        condition = _condition(expect)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s

        async def done() -> bool:
            return condition(self.records)

        if not condition(self.records):
            try:
                await self._read(lambda _: done(), timeout_s)
            except TimeoutError:
                wanted = f"{_describe(expect)} within {timeout_s}s"
                raise _failure(self.topic, wanted, self.records) from None
        return self.records

    async def _catch_up(self) -> None:
        """Read what the topic holds now: up to its end offsets of this moment."""

        async def caught_up(consumer: AIOKafkaConsumer) -> bool:
            ends = await consumer.end_offsets(list(consumer.assignment()))
            return all([await consumer.position(tp) >= end for tp, end in ends.items()])

        try:
            await self._read(caught_up, self.timeout_s)
        except TimeoutError:
            wanted = f"to read up to its end offsets within {self.timeout_s}s"
            raise _failure(self.topic, wanted, self.records) from None

    async def _read(
        self, done: Callable[[AIOKafkaConsumer], Awaitable[bool]], timeout_s: float
    ) -> None:
        async with _consumer(self.bootstrap, self.topic) as consumer:
            for tp in consumer.assignment():
                if tp.partition in self._next:
                    consumer.seek(tp, self._next[tp.partition])
            await _poll(consumer, self._add, lambda: done(consumer), timeout_s)

    def _add(self, records: list[Record]) -> None:
        self.records.extend(records)
        for record in records:
            self._next[record.partition] = max(
                self._next.get(record.partition, 0), record.offset + 1
            )


def record_events(
    bootstrap: str, topic: str, *, expect: Expectation | None = None, timeout_s: float = 30
) -> Recording:
    """`async with record_events(bootstrap, topic, expect=...) as rec:` then the action: on
    exit, `rec.records` is what `topic` got since entry, checked against `expect` (see
    `Recording`)."""
    return Recording(bootstrap, topic, expect, timeout_s)
