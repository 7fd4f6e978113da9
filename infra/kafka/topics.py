"""Kafka admin helpers: is a cluster answering, and create the registry's topics idempotently."""

import argparse
import asyncio
import contextlib
import time

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import (
    InvalidPartitionsError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from contracts.topics import TOPICS, Topic, Topics

_RETRY_S = 0.2


async def cluster_answers(bootstrap: str, timeout_ms: int = 5000) -> bool:
    """True when an admin client gets cluster metadata with at least one broker in it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        return bool((await admin.describe_cluster())["brokers"])
    except KafkaError:
        return False
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: str,
    topics: Topics = TOPICS,
    timeout: float = 30,  # noqa: ASYNC109 - a deadline over several requests and retries
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic in `topics` that is missing; return the names this call created.

    Safe to run concurrently: "already exists" is success, and a topic with fewer partitions
    than the registry says gets more (never fewer: Kafka cannot shrink a topic). Returns once
    cluster metadata shows every topic at full size, so clients started next see it all.
    """
    deadline = time.monotonic() + timeout
    wanted = {topic.name: topic for topic in topics.all()}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await _start(admin, deadline)
        created = await _create(admin, list(wanted.values()), replication_factor)
        for topic in wanted.values():
            await _settle(admin, topic, deadline)
        return created
    finally:
        await admin.close()


async def _start(admin: AIOKafkaAdminClient, deadline: float) -> None:
    # The broker may still be starting (e.g. `make up` then services at once): retry.
    while True:
        try:
            await admin.start()
            return
        except KafkaConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(_RETRY_S)


async def _create(
    admin: AIOKafkaAdminClient, topics: list[Topic], replication_factor: int
) -> list[str]:
    new = [
        NewTopic(
            t.name,
            t.partitions,
            replication_factor,
            topic_configs={"retention.ms": str(t.retention_ms)} if t.retention_ms else None,
        )
        for t in topics
    ]
    response = await admin.create_topics(new)  # waits up to the client's request timeout
    created = []
    for name, code, *rest in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            message = rest[0] if rest else ""
            raise for_code(code)(f"could not create topic {name}: {message}")
    return created


async def _settle(admin: AIOKafkaAdminClient, topic: Topic, deadline: float) -> None:
    """Wait until metadata shows `topic` with enough partitions, adding them once if short."""
    asked = False
    while True:
        count = await _partition_count(admin, topic.name)
        if count is not None and count >= topic.partitions:
            return
        if count is not None and not asked:
            asked = True
            # Another process may have grown it first; either way, wait for metadata to catch up.
            with contextlib.suppress(InvalidPartitionsError):
                await admin.create_partitions({topic.name: NewPartitions(topic.partitions)})
            continue
        # Not visible yet (just created, here or concurrently), or grown but metadata lags.
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic.name} did not reach {topic.partitions} partitions")
        await asyncio.sleep(_RETRY_S)


async def _partition_count(admin: AIOKafkaAdminClient, name: str) -> int | None:
    """Partitions of `name` in cluster metadata, or None while it is not visible yet."""
    (info,) = await admin.describe_topics([name])
    if info["error_code"] or not info["partitions"]:
        return None
    return len(info["partitions"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="", help="prefix for every topic name")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--replication-factor", type=int, default=1)
    args = parser.parse_args(argv)
    created = asyncio.run(
        ensure_topics(
            args.bootstrap, TOPICS.with_prefix(args.prefix), args.timeout, args.replication_factor
        )
    )
    print(f"topics created: {', '.join(created) or 'none (all exist)'}", flush=True)


if __name__ == "__main__":
    main()
