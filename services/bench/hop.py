"""The floor: one Kafka hop (a produce, then the fetch that returns it) on this machine.

Every streamed answer takes two (request to worker, first token back to the gateway), so
twice this is time to first token that no change to tokenbus's own code can remove. Measured
with the same client settings as the token path: the raw producer and the assigned consumer.
"""

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from contracts.topics import HOP_PROBE
from services.bench.stats import quantile
from services.common.kafka import assigned_consumer, ensure_topics, make_fast_producer
from services.common.settings import KafkaSettings


async def kafka_hop_ms(
    bootstrap: str, prefix: str, samples: int = 200, warmup: int = 100
) -> dict[str, Any]:
    """p50/p99 of produce-to-fetched latency over `samples` sequential messages, after
    `warmup` unmeasured ones (the broker's JIT warms up over the first few hundred)."""
    topic = HOP_PROBE.prefixed(prefix)
    await ensure_topics(bootstrap, [topic])
    producer = make_fast_producer(KafkaSettings(), service="bench", bootstrap_servers=bootstrap)
    consumer = assigned_consumer(bootstrap, "tokenbus-bench-hop")
    tp = TopicPartition(topic.name, 0)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        took: list[float] = []
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            await producer.send(topic.name, b"x", partition=0)
            await consumer.getone(tp)
            if i >= warmup:
                took.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)  # sequential, as one idle stream's events are
    finally:
        await consumer.stop()
        await producer.stop()
    took.sort()
    return {
        "p50": round(quantile(took, 0.5), 2),
        "p99": round(quantile(took, 0.99), 2),
        "n": len(took),
    }
