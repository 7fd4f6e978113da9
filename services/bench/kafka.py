"""Records produced to a topic (sum of end offsets), and waiting for a stable consumer group."""

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment


class OffsetCounter:
    """Sum of a topic's end offsets: the difference of two readings is the records produced."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> "OffsetCounter":
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        ends = await self._consumer.end_offsets(self._tps)
        return sum(ends.values())


async def wait_group_stable(
    bootstrap: str, group_id: str, members: int, timeout_s: float = 60.0
) -> bool:
    """True once `group_id` is Stable with `members` members that all have an assignment."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for response in await admin.describe_consumer_groups([group_id]):
                for group in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    state, found = group[2], group[5]
                    # a member is (member_id, client_id, host, metadata, assignment)
                    assigned = [m for m in found if _partitions(m[4])]
                    if state == "Stable" and len(found) == members == len(assigned):
                        return True
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return False


def _partitions(assignment: bytes) -> int:
    if not assignment:
        return 0
    decoded = ConsumerProtocolMemberAssignment.decode(assignment)
    return sum(len(partitions) for _, partitions in decoded.assignment)
