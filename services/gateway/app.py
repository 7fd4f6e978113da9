"""create_app(settings): the gateway's FastAPI app, with the fan-out hub and Kafka wiring."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge

from infra.kafka.topics import ensure_topics
from services.common.dlq import publish_dead_letter
from services.common.health import health_router
from services.common.kafka import make_broker
from services.common.models import load_models
from services.fanout import Hub, ReplyReader
from services.gateway.errors import install_error_handlers
from services.gateway.node import GatewayNode
from services.gateway.publish import RequestPublisher
from services.gateway.routes import chat, models, streams, ws
from services.gateway.settings import GatewaySettings

log = structlog.get_logger("gateway")
SERVICE = "gateway"


def create_app(settings: GatewaySettings, tracer_provider: TracerProvider | None = None) -> FastAPI:
    registry = CollectorRegistry()
    broker = make_broker(
        settings,
        service=SERVICE,
        registry=registry,
        tracer_provider=tracer_provider or TracerProvider(),
    )
    topics = settings.topics
    hub = Hub(buffer=settings.subscriber_buffer)

    async def dead_letter(record: Any, reason: str) -> None:
        await publish_dead_letter(
            broker.publish,
            topics.tokens_dlq.name,
            value=record.value or b"",
            key=record.key,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            reason=reason,
            consumer=SERVICE,
        )

    reader = ReplyReader(
        hub,
        settings.bootstrap_servers,
        topics.tokens.name,
        settings.reply_partitions,
        client_id=f"tokenbus-gateway-{settings.instance}",
        dead_letter=dead_letter,
    )
    node = GatewayNode(
        settings,
        hub,
        reader,
        RequestPublisher(broker, topics),
        load_models(settings.models, settings.llmsim_url),
    )
    Gauge(
        "tokenbus_gateway_watched_requests",
        "Requests with a watcher on this node",
        registry=registry,
    ).set_function(lambda: hub.watched_requests)
    Gauge(
        "tokenbus_gateway_subscriptions", "Open watchers on this node", registry=registry
    ).set_function(lambda: hub.subscriptions)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings.bootstrap_servers, topics)
        await broker.start()
        await reader.start()
        log.info("gateway_started", partitions=reader.partitions, port=settings.port)
        try:
            yield
        finally:
            await reader.stop()
            await broker.stop()

    async def readiness() -> dict[str, bool]:
        return {"kafka": await broker.ping(timeout=2.0), "reply_partitions": reader.ready}

    app = FastAPI(title="tokenbus gateway", version="0.1.0", lifespan=lifespan)
    app.state.node = node
    install_error_handlers(app)
    app.include_router(health_router(registry, readiness))
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(streams.router)
    app.include_router(ws.router)
    return app
