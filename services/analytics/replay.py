"""Rebuild support: move the consumer group's committed offsets back to each partition's start.

This is what `kafka-consumer-groups.sh --reset-offsets --to-earliest` does. It keeps the one
group id (a later restart without `--from-beginning` continues where the rebuild got to),
and Kafka refuses it while the group has live members, so a rebuild never races another
analytics process that is still writing into the tables being recreated.
"""

import asyncio
import time

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = structlog.get_logger("analytics")


class GroupBusy(RuntimeError):
    """The consumer group still has members: stop the other analytics processes first."""


async def reset_to_beginning(
    bootstrap: str,
    group_id: str,
    topic: str,
    timeout_s: float = 30.0,
) -> dict[TopicPartition, int]:
    """Commit the earliest offset of every partition of `topic` for `group_id`."""
    partitions = await _partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        start = await consumer.beginning_offsets(partitions)
        await _commit_when_group_empty(consumer, start, group_id, timeout_s)
        log.info("group_reset", group=group_id, topic=topic, partitions=len(partitions))
        return start
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for p in described.get("partitions") or ())
    if described.get("error_code") or not numbers:
        raise RuntimeError(f"topic {topic} does not exist")
    return [TopicPartition(topic, n) for n in numbers]


async def _commit_when_group_empty(
    consumer: AIOKafkaConsumer,
    offsets: dict[TopicPartition, int],
    group_id: str,
    timeout_s: float,
) -> None:
    # A process that just died still counts as a member until its session times out.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await consumer.commit(offsets)
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise GroupBusy(
                    f"consumer group {group_id!r} still has members ({type(exc).__name__}); "
                    "stop every analytics process of the group before rebuilding"
                ) from exc
            log.info("group_busy_waiting", group=group_id, error=type(exc).__name__)
            await asyncio.sleep(1.0)
