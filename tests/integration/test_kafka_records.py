"""The tests' one topic reader on a real broker: `read_topic` and the `record_events` recorder."""

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from contracts import Topics
from tests.kafka_records import read_topic, record_events

pytestmark = pytest.mark.kafka


async def _send(producer: AIOKafkaProducer, topic: str, *values: bytes, partition: int = 0):
    for value in values:
        await producer.send_and_wait(topic, value, key=b"k", partition=partition)


class TestReadTopic:
    async def test_reads_from_the_start_until_the_condition_holds(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        topic = topics.tokens.name
        await _send(producer, topic, b"a", b"b", partition=1)
        await producer.send_and_wait(topic, b"c", key=b"k2", partition=2, headers=[("h", b"1")])

        records = await read_topic(
            kafka_bootstrap, topic, until=lambda recs: any(r.value == b"c" for r in recs)
        )

        assert sorted(r.value for r in records) == [b"a", b"b", b"c"]
        [c] = [r for r in records if r.value == b"c"]
        assert (c.key, c.partition, c.offset, c.headers) == (b"k2", 2, 0, (("h", b"1"),))
        assert [(r.partition, r.offset) for r in records if r.partition == 1] == [(1, 0), (1, 1)]

    async def test_from_now_leaves_out_what_was_there(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        topic = topics.tokens.name
        await _send(producer, topic, b"old", b"old")
        reader = asyncio.create_task(
            read_topic(kafka_bootstrap, topic, until=1, from_beginning=False, timeout_s=20)
        )
        # The reader's position is set once it started; send until it has read something.
        while not reader.done():
            await _send(producer, topic, b"new")
            await asyncio.wait({reader}, timeout=0.2)
        assert {r.value for r in await reader} == {b"new"}

    async def test_a_condition_not_met_in_time_fails_listing_what_was_read(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        await _send(producer, topics.tokens.name, b"only-one")
        with pytest.raises(AssertionError) as failed:
            await read_topic(kafka_bootstrap, topics.tokens.name, until=2, timeout_s=1)
        message = str(failed.value)
        assert "at least 2 record(s)" in message and "saw 1 record(s)" in message
        assert "b'only-one'" in message


class TestRecordEvents:
    async def test_records_only_what_was_published_after_entry(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        topic = topics.tokens.name
        await _send(producer, topic, b"before", partition=0)
        await _send(producer, topic, b"before", partition=3)
        async with record_events(kafka_bootstrap, topic, expect=3) as rec:
            await _send(producer, topic, b"one", b"two", partition=0)
            await _send(producer, topic, b"three", partition=3)
        assert rec.started_at[0] == 1 and rec.started_at[3] == 1
        assert sorted(r.value for r in rec.records) == [b"one", b"three", b"two"]
        assert {(r.partition, r.offset) for r in rec.records} == {(0, 1), (0, 2), (3, 1)}

    async def test_without_an_expectation_it_reads_all_that_came_during_the_block(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        async with record_events(kafka_bootstrap, topics.tokens.name) as rec:
            await _send(producer, topics.tokens.name, b"x", b"y")
        assert [r.value for r in rec.records] == [b"x", b"y"]

    async def test_wait_for_reads_on_inside_the_block_and_after_it(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        topic = topics.tokens.name
        async with record_events(kafka_bootstrap, topic) as rec:
            await _send(producer, topic, b"first")
            seen = await rec.wait_for(lambda recs: any(r.value == b"first" for r in recs))
            assert [r.value for r in seen] == [b"first"]
            await _send(producer, topic, b"second")
        await _send(producer, topic, b"third")
        await rec.wait_for(3)
        assert [r.value for r in rec.records] == [b"first", b"second", b"third"]

    async def test_nothing_new_since_entry_passes_when_nothing_came(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        await _send(producer, topics.tokens.name, b"earlier")
        async with record_events(kafka_bootstrap, topics.tokens.name, expect=0) as rec:
            await _send(producer, topics.requests.name, b"elsewhere")
        assert rec.records == []

    async def test_nothing_new_since_entry_fails_listing_what_came(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        with pytest.raises(AssertionError) as failed:
            async with record_events(kafka_bootstrap, topics.tokens.name, expect=0):
                await _send(producer, topics.tokens.name, b"unwanted")
        message = str(failed.value)
        assert "exactly 0 new record(s)" in message and "saw 1 record(s)" in message
        assert "key=b'k' value=b'unwanted'" in message

    async def test_an_expectation_not_met_in_time_fails_listing_what_was_seen(
        self, kafka_bootstrap: str, topics: Topics, producer: AIOKafkaProducer
    ):
        def two_answers(records) -> bool:
            return sum(r.value == b"answer" for r in records) >= 2

        topic = topics.tokens.name
        with pytest.raises(AssertionError) as failed:
            async with record_events(kafka_bootstrap, topic, expect=two_answers, timeout_s=1):
                await _send(producer, topic, b"answer", b"noise")
        message = str(failed.value)
        assert f"{topic}: expected two_answers within 1s; saw 2 record(s)" in message
        assert "value=b'answer'" in message and "value=b'noise'" in message

    async def test_an_error_in_the_block_is_not_masked(self, kafka_bootstrap: str, topics: Topics):
        with pytest.raises(KeyError):
            async with record_events(kafka_bootstrap, topics.tokens.name, expect=1):
                raise KeyError("the action failed")
