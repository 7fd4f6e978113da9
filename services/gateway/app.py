"""create_app(settings): the gateway's FastAPI app, with the fan-out hub and Kafka wiring."""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp

from services.common.database import make_engine, migrate
from services.common.dlq import dead_letter_record
from services.common.health import health_router
from services.common.kafka import ensure_topics, make_broker
from services.common.metrics import GatewayMetrics, KafkaMetrics
from services.common.models import load_models
from services.common.openai_errors import OpenAIError, install_error_handlers
from services.fanout import Hub, ReplyReader
from services.gateway.body_limit import DeclaredBodyLimit, counted_body_too_large
from services.gateway.callers import Authenticator
from services.gateway.conversations import routes as conversations_routes
from services.gateway.conversations.sealing import Sealer
from services.gateway.conversations.store import ConversationStore
from services.gateway.node import GatewayNode
from services.gateway.publish import RequestPublisher
from services.gateway.responses import routes as responses_routes
from services.gateway.responses.store import ResponseStore
from services.gateway.rooms.hub import RoomHub
from services.gateway.routes import chat, models, rooms, streams, ws
from services.gateway.settings import GatewaySettings
from services.gateway.webchat import mount_webchat
from services.tenants.database import pepper
from services.tenants.limiter import RateLimiter
from services.tenants.store import TenantStore

log = structlog.get_logger("gateway")
SERVICE = "gateway"


def create_app(settings: GatewaySettings, tracer_provider: TracerProvider | None = None) -> FastAPI:
    registry = CollectorRegistry()
    tracer_provider = tracer_provider or TracerProvider()
    broker = make_broker(
        settings, service=SERVICE, registry=registry, tracer_provider=tracer_provider
    )
    topics = settings.topics
    hub = Hub(buffer=settings.subscriber_buffer)

    kafka_metrics = KafkaMetrics(registry)

    async def dead_letter(record: Any, reason: str) -> None:
        await dead_letter_record(broker.publish, topics.tokens_dlq.name, record, reason, SERVICE)
        kafka_metrics.dead_letters.labels(topics.tokens_dlq.name).inc()

    reader = ReplyReader(
        hub,
        settings.bootstrap_servers,
        topics.tokens.name,
        settings.reply_partitions,
        client_id=f"tokenbus-gateway-{settings.instance}",
        dead_letter=dead_letter,
        delivered=kafka_metrics.delivery.observe,
    )
    keys = settings.auth_mode == "keys"
    # The shared SQL: keys and limits (keys mode) and the Responses API index (always).
    engine = make_engine(settings.database_url)
    responses = ResponseStore(engine)
    conversations = ConversationStore(
        engine, Sealer.from_keyring(settings.conversation_keys.get_secret_value())
    )
    node = GatewayNode(
        settings,
        hub,
        reader,
        # A new id per process: a node that died is never mistaken for its successor.
        RequestPublisher(broker, topics, node=f"{settings.instance}-{secrets.token_hex(4)}"),
        load_models(
            settings.models,
            settings.llmsim_url,
            localmodel_url=settings.localmodel_url,
            localmodel_parallel=settings.localmodel_parallel,
        ),
        Authenticator(
            TenantStore(engine, pepper(settings)) if keys else None,
            settings.key_cache_s,
            settings.key_stale_s,
        ),
        RateLimiter(engine, settings.instance, settings.lease_s, settings.lease_max_s)
        if keys
        else None,
        responses=responses,
        conversations=conversations,
    )
    Gauge(
        "tokenbus_gateway_watched_requests",
        "Requests with a watcher on this node",
        registry=registry,
    ).set_function(lambda: hub.watched_requests)
    Gauge(
        "tokenbus_gateway_subscriptions", "Open watchers on this node", registry=registry
    ).set_function(lambda: hub.subscriptions)
    node.metrics = GatewayMetrics(registry)
    node.tracer = tracer_provider.get_tracer("tokenbus.gateway")
    node.slow_consumer_drops = node.metrics.slow_consumer_drops

    room_hub = RoomHub.of(node)
    node.drain_hooks.append(room_hub.cut_for_drain)
    node.metrics.rooms_open.set_function(lambda: len(room_hub.local))
    node.metrics.room_members.set_function(lambda: sum(map(len, room_hub.local.values())))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if keys:
            refuse_placeholder_secrets(settings)
        await migrate(engine)
        await ensure_topics(settings.bootstrap_servers, topics)
        await broker.start()
        await reader.start()
        await room_hub.start()
        node.bind_loop()
        renewing = asyncio.create_task(_renew_leases(node.limiter)) if node.limiter else None
        purging = asyncio.create_task(_purge(responses, conversations, settings))
        lag = asyncio.create_task(kafka_metrics.follow_lag(reader.lag))
        alive = asyncio.create_task(_say_alive(node))
        log.info(
            "gateway_started",
            partitions=reader.partitions,
            port=settings.port,
            auth=settings.auth_mode,
        )
        try:
            yield
        finally:
            for task in (renewing, purging, lag, alive):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await room_hub.stop()
            await reader.stop()
            await broker.stop()
            await engine.dispose()

    async def readiness() -> dict[str, bool]:
        checks = {"kafka": await broker.ping(timeout=2.0), "reply_partitions": reader.ready}
        checks["rooms"] = room_hub.ready
        checks["accepting"] = not node.draining  # false from SIGTERM on: send traffic elsewhere
        return checks

    async def advisory() -> dict[str, bool]:
        # Shown, not gating: every node shares the database, so failing readiness on it would
        # take them all out at once, while cached keys and the limits policy keep serving.
        return {"database": await _database_answers(engine)}

    app = _GatewayApp(
        title="tokenbus gateway",
        version="0.1.0",
        lifespan=lifespan,
        max_body_size=settings.limits.max_body_bytes,
        # HTTP server spans on the service's provider (the global one in a service process).
        telemetry={"tracer_provider": tracer_provider},
    )
    app.state.node = node
    app.state.rooms = room_hub
    app.state.engine = engine  # disposed by the lifespan (or by whoever skips it)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    errors = node.metrics.http_errors

    def count_error(err: OpenAIError) -> None:
        errors.labels(str(err.status), str(err.code or "")).inc()

    install_error_handlers(app, on_http=counted_body_too_large, on_answer=count_error)
    app.include_router(health_router(registry, readiness, advisory))
    app.include_router(chat.router)
    app.include_router(models.router)
    app.include_router(streams.router)
    app.include_router(responses_routes.router)
    app.include_router(conversations_routes.router)
    app.include_router(ws.router)
    app.include_router(rooms.router)
    mount_webchat(app)  # the chat page at `/`
    return app


class _GatewayApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outermost, so a declared oversized body gets our 413 body, not Starlette's text.
        return DeclaredBodyLimit(super().build_middleware_stack(), self.max_body_size)


# Keys travel as `Authorization: Bearer`, never as cookies: no credentials mode is needed.
CORS_REQUEST_HEADERS = ["authorization", "content-type", "last-event-id", "x-tokenbus-deadline-s"]
CORS_EXPOSED_HEADERS = [
    "x-request-id",
    "x-tokenbus-route",
    "x-tokenbus-model",
    "x-tokenbus-route-reason",
    "x-tokenbus-route-score",
    "x-tokenbus-route-features",
    "retry-after",
    *(
        f"x-ratelimit-{what}-{kind}"
        for what in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ),
]


def refuse_placeholder_secrets(settings: GatewaySettings) -> None:
    """Fail fast: a keys-mode node outside development must have real secrets."""
    insecure = settings.insecure_secrets()
    if insecure and settings.environment != "development":
        names = ", ".join(f"TOKENBUS_{name.upper()}" for name in insecure)
        raise RuntimeError(
            f"{names} still at the development placeholder: set a random secret (the same on "
            "every gateway node), or TOKENBUS_ENVIRONMENT=development on a developer machine"
        )


async def _say_alive(node: GatewayNode) -> None:
    """Workers count this node's clients as watchers only while it says this."""
    failing = False
    while True:
        try:
            await node.publisher.alive(node.settings.disconnect_grace_s)
            failing = False
        except Exception as exc:  # the broker is away: said once, not every beat
            if not failing:
                log.warning("alive_failed", error=type(exc).__name__)
            failing = True
        await asyncio.sleep(node.settings.node_alive_s)


async def _renew_leases(limiter: RateLimiter) -> None:
    while True:
        await asyncio.sleep(limiter.lease_s / 3)
        try:
            await limiter.renew()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("lease_renewal_failed", error=type(exc).__name__)


async def _purge(
    responses: ResponseStore,
    conversations: ConversationStore,
    settings: GatewaySettings,
    every_s: float = 600.0,
) -> None:
    """Expired and deleted responses, and idle conversations, leave the database (every node
    may do it: it is idempotent)."""
    while True:
        idle = timedelta(days=settings.conversation_retention_days)
        try:
            purged = await responses.purge_expired()
            idle_purged = await conversations.purge_idle(datetime.now(UTC) - idle)
            if purged or idle_purged:
                log.info("purged", responses=purged, conversations=idle_purged)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("purge_failed", error=type(exc).__name__)
        await asyncio.sleep(every_s)


async def _database_answers(engine: Any) -> bool:
    try:
        async with asyncio.timeout(2.0), engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
        return True
    except (TimeoutError, SQLAlchemyError, OSError):
        return False
