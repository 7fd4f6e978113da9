"""create_app(settings): the usage consumer and the usage API in one FastAPI process."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from contracts import DeadLetter
from services.analytics.api import router
from services.analytics.consumer import UsageSink, rewind
from services.analytics.replay import reset_to_beginning
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import MIGRATION_BRANCH, UsageStore
from services.common.database import make_engine, migrate
from services.common.dlq import dead_letter_record
from services.common.health import health_router
from services.common.kafka import ensure_topics, make_broker
from services.common.metrics import AnalyticsMetrics, KafkaMetrics, group_lag
from services.common.openai_errors import install_error_handlers
from services.tenants.database import pepper
from services.tenants.store import TenantStore

log = structlog.get_logger("analytics")
SERVICE = "analytics"


async def _undecoded(message: StreamMessage[Any]) -> Any:
    # The handler validates the raw bytes against the contract itself; FastStream's own
    # decoder would json.loads every record of the batch first (half the CPU of a replay).
    return message.body


def add_usage_subscriber(broker: KafkaBroker, settings: AnalyticsSettings, sink: Any) -> Any:
    """The batch subscriber on the usage topic (also used for the AsyncAPI document)."""
    topics = settings.topics
    broker.publisher(
        topics.usage_dlq.name,
        title="usage_dead_letters",
        schema=DeadLetter,
        description="Usage records analytics could not store, with the reason",
    )
    subscriber = broker.subscriber(
        topics.usage.name,
        group_id=settings.group_id,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        batch=True,  # one getmany() = one transaction: up to batch_max records
        max_records=settings.batch_max,
        batch_timeout_ms=settings.batch_wait_ms,
        title="on_usage_recorded",
        description="UsageRecorded batches; committed only after their rows are durable",
        decoder=_undecoded,
    )

    @subscriber
    async def on_usage_recorded(message: KafkaMessage) -> None:
        records: tuple[ConsumerRecord[Any, Any], ...] = message.raw_message
        consumer = message.consumer
        # The in-memory test broker has no real consumer and nothing to commit.
        commit = consumer.commit if isinstance(consumer, AIOKafkaConsumer) else None
        try:
            await sink.handle(records, commit)
        except Exception:
            # A bug, not bad data: log it loudly, and fetch the batch again rather than
            # committing past it with the next one.
            log.exception("usage_batch_crashed", records=len(records))
            rewind(consumer, records)
            await asyncio.sleep(1.0)

    return subscriber


def _refuse_placeholder_pepper(settings: AnalyticsSettings) -> None:
    if settings.auth_mode == "keys" and settings.environment != "development":
        if settings.insecure_secrets():
            raise RuntimeError(
                "TOKENBUS_KEY_PEPPER still at the development placeholder: set the secret "
                "the gateways use, or TOKENBUS_ENVIRONMENT=development"
            )


def create_app(
    settings: AnalyticsSettings, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings,
        service=SERVICE,
        registry=registry,
        tracer_provider=tracer_provider or TracerProvider(),
    )
    engine = make_engine(settings.database_url)
    store = UsageStore(engine)
    topics = settings.topics
    analytics_metrics = AnalyticsMetrics(registry)
    kafka_metrics = KafkaMetrics(registry)

    def count(outcome: str, n: int) -> None:
        analytics_metrics.records.labels(outcome).inc(n)

    async def dead_letter(record: ConsumerRecord[Any, Any], reason: str) -> None:
        await dead_letter_record(broker.publish, topics.usage_dlq.name, record, reason, SERVICE)
        kafka_metrics.dead_letters.labels(topics.usage_dlq.name).inc()
        log.warning("dead_lettered", partition=record.partition, offset=record.offset)

    sink = UsageSink(store, dead_letter, count, analytics_metrics.batch_seconds.observe)
    subscriber = add_usage_subscriber(broker, settings, sink)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _refuse_placeholder_pepper(settings)
        await ensure_topics(settings.bootstrap_servers, topics)
        if settings.from_beginning:
            # Offsets first: it fails while other members live, before any table is dropped.
            await reset_to_beginning(
                settings.bootstrap_servers,
                settings.group_id,
                topics.usage.name,
                settings.reset_timeout_s,
            )
        await migrate(engine, rebuild_branch=MIGRATION_BRANCH if settings.from_beginning else None)
        await broker.start()
        log.info("analytics_started", group=settings.group_id, rebuild=settings.from_beginning)
        lag = asyncio.create_task(kafka_metrics.follow_lag(lambda: group_lag(subscriber.consumer)))
        try:
            yield
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            consumer = subscriber.consumer
            if consumer is not None:
                consumer.pause(*consumer.assignment())
            await sink.drain()  # the batch being stored is committed, later ones never begin
            await broker.stop()
            await engine.dispose()

    async def readiness() -> dict[str, bool]:
        try:
            async with asyncio.timeout(2.0):
                database = await store.ping()
        except TimeoutError:
            database = False
        return {"database": database, "kafka": await broker.ping(timeout=2.0)}

    app = FastAPI(title="tokenbus analytics", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(health_router(registry, readiness))
    app.state.settings, app.state.engine, app.state.store = settings, engine, store
    app.state.tenant_store = TenantStore(engine, pepper(settings))
    app.state.broker, app.state.sink = broker, sink
    return app
