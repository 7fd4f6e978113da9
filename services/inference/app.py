"""create_app(settings): the inference worker as a FastStream broker inside a FastAPI shell."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge

from services.common.dlq import publish_dead_letter
from services.common.health import health_router
from services.common.kafka import ensure_topics, make_broker, make_fast_producer
from services.common.metrics import KafkaMetrics, WorkerMetrics, group_lag
from services.common.models import load_models
from services.inference.backends import BackendClients
from services.inference.settings import InferenceSettings
from services.inference.worker import Delivery, FlowControl, Worker

log = structlog.get_logger("inference")
SERVICE = "inference"


def _delivery(message: Any) -> Delivery:
    record = message.raw_message
    consumer = message.consumer
    # The in-memory test broker has no real consumer and nothing to commit.
    commit = consumer.commit if isinstance(consumer, AIOKafkaConsumer) else None
    return Delivery(
        TopicPartition(record.topic, record.partition), record.offset, record.key, commit
    )


@dataclass(frozen=True, slots=True)
class WorkerBroker:
    broker: KafkaBroker
    usage: DefaultPublisher
    requests: Any  # the requests subscriber; its consumer exists once the broker runs


def build_broker(
    settings: InferenceSettings,
    worker_ref: list[Worker],
    registry: CollectorRegistry,
    tracer_provider: TracerProvider,
) -> WorkerBroker:
    """The broker with the worker's subscribers and publishers (also used for AsyncAPI)."""
    topics = settings.topics
    broker = make_broker(
        settings, service=SERVICE, registry=registry, tracer_provider=tracer_provider
    )
    usage = broker.publisher(
        topics.usage.name,
        title="usage_recorded",
        schema=topics.usage.value,
        description="One record per attempt",
    )
    broker.publisher(
        topics.tokens.name,
        title="stream_events",
        schema=topics.tokens.value,
        description="started, delta..., completed | failed; on the reply partition",
    )

    requests = broker.subscriber(
        topics.requests.name,
        group_id=settings.group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.session_timeout_ms // 4,
        title="on_chat_requested",
        description="ChatRequested; committed only after the generation finished",
    )

    @requests
    async def on_chat_requested(message: KafkaMessage) -> None:
        await worker_ref[0].accept(message.body, _delivery(message), message.headers)

    @broker.subscriber(
        topics.control.name,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="latest",
        title="on_control",
        description="Cancels and watcher changes, read by every worker",
    )
    async def on_control(message: KafkaMessage) -> None:
        await worker_ref[0].control(message.body, _delivery(message))

    return WorkerBroker(broker, usage, requests)


def create_app(
    settings: InferenceSettings, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    registry = CollectorRegistry()
    tracer_provider = tracer_provider or TracerProvider()
    worker_ref: list[Worker] = []
    wired = build_broker(settings, worker_ref, registry, tracer_provider)
    broker = wired.broker
    models = load_models(
        settings.models,
        settings.llmsim_url,
        localmodel_url=settings.localmodel_url,
        localmodel_parallel=settings.localmodel_parallel,
    )
    clients = BackendClients(models)
    topics = settings.topics

    kafka_metrics = KafkaMetrics(registry)

    async def dead_letter(*, value: bytes, delivery: Delivery, reason: str) -> None:
        kafka_metrics.dead_letters.labels(topics.requests_dlq.name).inc()
        await publish_dead_letter(
            broker.publish,
            topics.requests_dlq.name,
            value=value,
            key=delivery.key,
            source_topic=delivery.tp.topic,
            source_partition=delivery.tp.partition,
            source_offset=delivery.offset,
            reason=reason,
            consumer=SERVICE,
        )
        log.warning("dead_lettered", topic=delivery.tp.topic, offset=delivery.offset)

    async def publish_usage(record: Any) -> None:
        await wired.usage.publish(record, key=record.tenant_id.encode())

    producer_ref: list[AIOKafkaProducer] = []

    async def send(*args: Any) -> Any:
        return await producer_ref[0].send(
            *args[:2], key=args[2], partition=args[3], headers=args[4]
        )

    worker = Worker(
        settings,
        models,
        clients,
        send,
        publish_usage,
        dead_letter,
        WorkerMetrics(registry),
        tracer_provider.get_tracer("tokenbus.inference"),
    )
    worker_ref.append(worker)
    Gauge(
        "tokenbus_inference_active_generations", "Generations running now", registry=registry
    ).set_function(lambda: worker.active)
    Gauge(
        "tokenbus_inference_paused",
        "1 while the worker is full and not fetching",
        registry=registry,
    ).set_function(lambda: int(worker.paused))
    Gauge(
        "tokenbus_inference_pauses",
        "Times the worker paused fetching since start",
        registry=registry,
    ).set_function(lambda: worker.pauses)
    busy = Gauge(
        "tokenbus_inference_backend_busy",
        "Generations holding a backend slot",
        ["backend"],
        registry=registry,
    )
    for name in clients.busy():

        def busy_now(name: str = name) -> int:
            return clients.busy()[name]

        busy.labels(name).set_function(busy_now)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings.bootstrap_servers, topics)
        producer = make_fast_producer(settings, service=SERVICE)  # needs the running loop
        producer_ref.append(producer)
        await producer.start()
        await broker.start()
        consumer = wired.requests.consumer
        worker.attach_flow_control(
            FlowControl(
                pause=lambda: consumer.pause(*consumer.assignment()),
                resume=lambda: consumer.resume(*consumer.paused()),
            )
        )
        log.info("worker_started", group=settings.group_id, models=models.profile)
        lag = asyncio.create_task(kafka_metrics.follow_lag(lambda: group_lag(consumer)))
        try:
            yield
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            await _shutdown(broker, worker, settings.drain_timeout_s)
            await broker.stop()
            await producer.stop()
            await clients.close()

    async def readiness() -> dict[str, bool]:
        return {"kafka": await broker.ping(timeout=2.0)}

    app = FastAPI(title="tokenbus inference", lifespan=lifespan)
    app.include_router(health_router(registry, readiness))
    app.state.broker, app.state.worker = broker, worker
    return app


async def _shutdown(broker: KafkaBroker, worker: Worker, drain_timeout_s: float) -> None:
    """Stop fetching, let running generations finish and commit, then leave the group."""
    for subscriber in broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is not None:
            consumer.pause(*consumer.assignment())
    abandoned = await worker.drain(drain_timeout_s)
    log.info("worker_drained", abandoned=abandoned)
