"""Read UsageRecorded events from a usage topic, for assertions."""

import asyncio

from aiokafka import AIOKafkaConsumer

from contracts import UsageRecorded


async def usage_of(
    bootstrap: str, topic: str, request_id: str, within: float = 20.0
) -> UsageRecorded:
    """The usage record of `request_id` (read from the topic's start), or fail in `within` s."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while True:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        usage = UsageRecorded.model_validate_json(record.value)
                        if usage.request_id == request_id:
                            return usage
    finally:
        await consumer.stop()
