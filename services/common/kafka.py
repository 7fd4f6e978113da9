"""Kafka plumbing every service shares: the FastStream broker and a raw low-latency producer."""

import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

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
