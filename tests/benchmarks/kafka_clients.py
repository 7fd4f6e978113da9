"""aiokafka (what tokenbus uses) beside confluent-kafka (librdkafka) on the same broker.

    python -m tests.benchmarks.kafka_clients

Two questions issue 16 asks before any client swap: what one hop costs in time (a produce,
then the fetch that returns it, sequentially, after a warm-up), and what one produced message
costs in CPU (the process's user + system time over every thread, librdkafka's included) at
two paces: sparse (one message every 2 ms, as a worker's token events are under the
benchmark's load) and dense (bursts of ten every millisecond). Both clients run in the same
uvloop with the same pacing, acks=1, linger 0, four partitions. Writes
docs/bench/kafka_clients.json.

Not a test: pytest does not collect this file (no `test_` prefix, no test functions).
"""

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import OFFSET_END, Consumer, Producer
from confluent_kafka import TopicPartition as CkPartition

from contracts.topics import HOP_PROBE
from services.common.kafka import ensure_topics
from tests.kafka_broker import session_broker

# A delta event's size, as a worker produces it.
VALUE = (
    b'{"type":"delta","schema_version":1,"request_id":"r-0-1764547200000-acme-0123456789ab",'
    b'"seq":12,"attempt":"5f0c2a9d1e7b4c33","ts":"2026-12-01T01:02:03.456789Z",'
    b'"content":" the next few words of it"}'
)
PARTITIONS = 4


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def hop_aiokafka(bootstrap: str, topic: str, n: int, warmup: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=100)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    took = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            await producer.send(topic, b"x", partition=0)
            await consumer.getone(tp)
            if i >= warmup:
                took.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)
    finally:
        await consumer.stop()
        await producer.stop()
    return took


async def hop_confluent(bootstrap: str, topic: str, n: int, warmup: int) -> list[float]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-hop",  # required by the client; nothing is committed
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.assign([CkPartition(topic, 0, OFFSET_END)])
    consumer.poll(0.5)
    took = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            producer.produce(topic, b"x", partition=0)
            producer.poll(0)
            while consumer.poll(1.0) is None:
                pass
            if i >= warmup:
                took.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.002)
    finally:
        consumer.close()
        producer.flush(5)
    return took


Pacer = Callable[[int], Awaitable[None]]


def pacer(dense: bool) -> Pacer:
    async def pace(i: int) -> None:
        if not dense:
            await asyncio.sleep(0.002)
        elif i % 10 == 9:
            await asyncio.sleep(0.001)

    return pace


async def produce_aiokafka(bootstrap: str, topic: str, n: int, pace: Pacer) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    try:
        for i in range(200):  # connections and metadata, unmeasured
            await producer.send(topic, VALUE, partition=i % PARTITIONS)
        await producer.flush()
        c0, futures = cpu_s(), []
        for i in range(n):
            futures.append(await producer.send(topic, VALUE, key=b"k", partition=i % PARTITIONS))
            await pace(i)
        await asyncio.gather(*futures)
        return cpu_s() - c0
    finally:
        await producer.stop()


async def produce_confluent(bootstrap: str, topic: str, n: int, pace: Pacer) -> float:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1})
    delivered = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        delivered += err is None

    for i in range(200):
        producer.produce(topic, VALUE, partition=i % PARTITIONS)
    producer.flush(10)
    c0 = cpu_s()
    for i in range(n):
        producer.produce(topic, VALUE, key=b"k", partition=i % PARTITIONS, on_delivery=on_delivery)
        producer.poll(0)  # delivery reports, as an asyncio app would drain them
        await pace(i)
    producer.flush(30)
    took = cpu_s() - c0
    assert delivered == n, f"{delivered} of {n} delivered"
    return took


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
        "n": len(values),
    }


async def run(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    hop_topic = HOP_PROBE.prefixed("clients.")
    load_topic = HOP_PROBE.prefixed("clients.load.")
    load_topic = type(load_topic)(load_topic.name, "none", PARTITIONS, bytes)
    await ensure_topics(bootstrap, [hop_topic, load_topic])
    out: dict[str, Any] = {"hop_ms": {}, "produce_cpu_us_per_message": {}}
    clients = {"aiokafka": (hop_aiokafka, produce_aiokafka),
               "confluent-kafka": (hop_confluent, produce_confluent)}  # fmt: skip
    for name, (hop, _) in clients.items():
        out["hop_ms"][name] = summary(await hop(bootstrap, hop_topic.name, args.hops, 300))
        print(f"hop {name:16s} {out['hop_ms'][name]}", flush=True)
    for pace_name, dense, n in (("sparse", False, args.sparse), ("dense", True, args.dense)):
        for name, (_, produce) in clients.items():
            runs = [await produce(bootstrap, load_topic.name, n, pacer(dense)) for _ in range(2)]
            us = round(min(runs) / n * 1e6, 1)
            out["produce_cpu_us_per_message"].setdefault(pace_name, {})[name] = us
            print(f"produce {pace_name:6s} {name:16s} {us} CPU-us/message", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hops", type=int, default=300)
    p.add_argument("--sparse", type=int, default=3000, help="messages at 1 per 2 ms")
    p.add_argument("--dense", type=int, default=20000, help="messages at 10 per ms")
    p.add_argument("--json", type=Path, default=Path("docs/bench/kafka_clients.json"))
    args = p.parse_args()
    with session_broker(Path(tempfile.mkdtemp(prefix="tokenbus-clients-"))) as bootstrap:
        result = uvloop.run(run(bootstrap, args))
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
