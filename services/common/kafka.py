"""Kafka plumbing every service shares: the FastStream broker, a raw low-latency producer, a
raw consumer of assigned partitions, and the registry's topics created idempotently."""

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import (
    InvalidPartitionsError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from contracts.topics import TOPICS, Topic, Topics
from services.common.settings import KafkaSettings


def make_broker(
    settings: KafkaSettings,
    *,
    service: str,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider,
) -> KafkaBroker:
    """A FastStream broker with W3C trace propagation and Prometheus metrics."""
    return KafkaBroker(
        settings.bootstrap_servers,
        client_id=f"tokenbus-{service}-{settings.instance}",
        middlewares=(
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=service),
        ),
        logger=logging.getLogger(f"tokenbus.{service}.kafka"),
        # Per-message "Received/Processed" lines cost CPU on every request: DEBUG only.
        log_level=logging.DEBUG,
        acks="all",
        linger_ms=0,
    )


def make_fast_producer(
    settings: KafkaSettings, *, service: str, **overrides: Any
) -> AIOKafkaProducer:
    """A bare producer for per-token events, where FastStream's per-message middleware costs
    more than the message (trace context is injected once per request instead)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": f"tokenbus-{service}-fast-{settings.instance}",
        "linger_ms": 0,
        "acks": 1,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def assigned_consumer(bootstrap: str, client_id: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with no group, for partitions it is assigned (reply partitions, history):
    nothing is committed, and a fetch returns as soon as one record is there."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": None,
        "enable_auto_commit": False,
        "client_id": client_id,
        "fetch_min_bytes": 1,
        "fetch_max_wait_ms": 100,
    }
    options.update(overrides)
    return AIOKafkaConsumer(**options)


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
    topics: Topics | list[Topic] = TOPICS,
    timeout: float = 30,  # noqa: ASYNC109 - a deadline over several requests and retries
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic in `topics` (the registry, or a list) that is missing; return the
    names this call created.

    Safe to run concurrently: "already exists" is success, and a topic with fewer partitions
    than the registry says gets more (never fewer: Kafka cannot shrink a topic). Returns once
    cluster metadata shows every topic at full size, so clients started next see it all.
    """
    deadline = time.monotonic() + timeout
    listed = topics.all() if isinstance(topics, Topics) else topics
    wanted = {topic.name: topic for topic in listed}
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
