"""Every metric a tokenbus service exports about requests, defined once and listed in
docs/metrics.md.

Names follow the OpenTelemetry GenAI semantic conventions (v1.41) as Prometheus renders
them (dots to underscores, the unit as a suffix), so dashboards written for other gateways
read them. What the conventions do not name is `tokenbus_*`. Label children are bound once
per request (a `labels()` lookup takes a lock and hashes the values); nothing here runs per
token.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts import Completed, Failed, Started, StreamEvent, UsageRecorded

# The conventions' recommended bucket boundaries.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)  # fmt: skip
PER_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

log = structlog.get_logger("metrics")

OPERATION = "chat"  # gen_ai.operation.name: every request is a chat completion underneath
# At the gateway: what clients feel, by API and by where the request went.
SERVER_LABELS = ("gen_ai_operation_name", "api", "route", "tier", "gen_ai_response_model")
# At the worker: what one backend did.
CLIENT_LABELS = ("gen_ai_operation_name", "backend", "tier", "gen_ai_response_model")


class GatewayMetrics:
    """The gateway's request metrics (its gauges of watchers and subscriptions live in app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "From the request reaching the gateway to its first answer token leaving it",
            SERVER_LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.per_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, per successful request",
            SERVER_LABELS,
            buckets=PER_TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "From the request reaching the gateway to its last event leaving it",
            (*SERVER_LABELS, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.active_streams = Gauge(
            "tokenbus_gateway_active_streams",
            "Streams this node is delivering now",
            ["transport"],
            registry=registry,
        )
        self.connections = Gauge(
            "tokenbus_gateway_websocket_connections",
            "Open WebSocket connections",
            registry=registry,
        )
        self.disconnects = Counter(
            "tokenbus_gateway_client_disconnects",
            "Clients that left before their stream ended",
            ["transport"],
            registry=registry,
        )
        self.resumes = Counter(
            "tokenbus_gateway_resumes",
            "Streams opened again by id (resume, watch, reconnect)",
            ["transport"],
            registry=registry,
        )
        self.limits_unchecked = Counter(
            "tokenbus_gateway_limits_unchecked",
            "Requests admitted without a rate-limit check: the database was unreachable and"
            " limits_when_database_down is open",
            registry=registry,
        )
        self.cancels = Counter(
            "tokenbus_gateway_cancellations", "Cancels asked by clients", registry=registry
        )
        self.slow_consumer_drops = Counter(
            "tokenbus_gateway_slow_consumer_drops",
            "Watchers dropped for falling too far behind",
            registry=registry,
        )
        self.room_events = Counter(
            "tokenbus_room_events",
            "Room events this node published, by type (said, asked, joined, left, typing, ...)",
            ["type"],
            registry=registry,
        )
        self.rooms_open = Gauge(
            "tokenbus_rooms_open", "Rooms with members connected to this node", registry=registry
        )
        self.room_members = Gauge(
            "tokenbus_room_members", "Room members connected to this node", registry=registry
        )
        self.http_errors = Counter(
            "tokenbus_gateway_http_errors",
            "OpenAI-format errors answered, by HTTP status and error code",
            ["status", "code"],
            registry=registry,
        )

    def request(self, api: str) -> "RequestTimer":
        """A timer for one request submitted now."""
        return RequestTimer(self, api)


class RequestTimer:
    """One request's clock at the gateway: fed the events as they leave for the client."""

    __slots__ = ("_api", "_first", "_labels", "_metrics", "_t0")

    def __init__(self, metrics: GatewayMetrics, api: str) -> None:
        self._metrics, self._api = metrics, api
        self._t0 = time.monotonic()
        self._first: float | None = None
        self._labels: tuple[str, ...] | None = None

    def event(self, event: StreamEvent) -> None:
        if isinstance(event, Started):
            self._labels = (OPERATION, self._api, event.route_reason, event.tier, event.model)
        elif event.type == "delta":
            if self._first is None and self._labels is not None:
                self._first = time.monotonic()
                self._metrics.ttft.labels(*self._labels).observe(self._first - self._t0)
        elif isinstance(event, Completed | Failed):
            self._end(event)

    def _end(self, event: Completed | Failed) -> None:
        labels = self._labels or (OPERATION, self._api, "", "", "")
        now = time.monotonic()
        error = event.code.value if isinstance(event, Failed) else ""
        self._metrics.duration.labels(*labels, error).observe(now - self._t0)
        usage = event.usage
        if isinstance(event, Completed) and self._first is not None and usage is not None:
            if usage.completion_tokens > 1:
                per_token = (now - self._first) / (usage.completion_tokens - 1)
                self._metrics.per_token.labels(*labels).observe(per_token)


@dataclass(frozen=True, slots=True)
class _Client:
    ttfc: Histogram
    per_chunk: Histogram
    duration: Histogram
    tokens: Histogram
    cost: Counter
    routes: Counter
    retries: Counter
    fallbacks: Counter
    upstream_errors: Counter


class WorkerMetrics:
    """The worker's backend metrics, recorded once per finished request from its usage record
    (the one summary of what happened: tries, tokens, cost, time to first token)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._m = _Client(
            ttfc=Histogram(
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "From the generation's start to its first answer chunk, retries included",
                CLIENT_LABELS,
                buckets=TTFT_BUCKETS,
                registry=registry,
            ),
            per_chunk=Histogram(
                "gen_ai_client_operation_time_per_output_chunk_seconds",
                "Mean time per output chunk after the first, one observation per request",
                CLIENT_LABELS,
                buckets=PER_TOKEN_BUCKETS,
                registry=registry,
            ),
            duration=Histogram(
                "gen_ai_client_operation_duration_seconds",
                "A request's whole generation, every try included",
                (*CLIENT_LABELS, "error_type"),
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            tokens=Histogram(
                "gen_ai_client_token_usage",
                "Tokens per request, by type (input, output)",
                (*CLIENT_LABELS, "gen_ai_token_type"),
                buckets=TOKEN_BUCKETS,
                registry=registry,
            ),
            cost=Counter(
                "tokenbus_inference_cost_usd",
                "What the backends charge, at the configured prices",
                ["backend", "tier"],
                registry=registry,
            ),
            routes=Counter(
                "tokenbus_inference_routes",
                "Routing decisions: the tier chosen and why (explicit, score, passthrough)",
                ["tier", "reason"],
                registry=registry,
            ),
            retries=Counter(
                "tokenbus_inference_retries",
                "Backend tries after the first, by backend and the error that caused them",
                ["backend", "code"],
                registry=registry,
            ),
            fallbacks=Counter(
                "tokenbus_inference_fallbacks",
                "Requests answered (or last tried) by a tier other than the one routed to",
                ["from_tier", "to_tier"],
                registry=registry,
            ),
            upstream_errors=Counter(
                "tokenbus_inference_upstream_errors",
                "Backend tries that failed, by backend and error code",
                ["backend", "code"],
                registry=registry,
            ),
        )

    def finished(self, record: UsageRecorded) -> None:
        m = self._m
        labels = (OPERATION, record.backend, record.tier, record.model)
        m.routes.labels(record.tier if not record.tries else record.tries[0].tier,
                        record.route).inc()  # fmt: skip
        error = record.error_code.value if record.error_code else ""
        m.duration.labels(*labels, error).observe(record.duration_ms / 1000)
        usage = record.usage
        m.tokens.labels(*labels, "input").observe(usage.prompt_tokens)
        m.tokens.labels(*labels, "output").observe(usage.completion_tokens)
        if record.cost_usd:
            m.cost.labels(record.backend, record.tier).inc(record.cost_usd)
        if record.ttft_ms is not None:
            m.ttfc.labels(*labels).observe(record.ttft_ms / 1000)
            streamed_ms = record.duration_ms - record.ttft_ms
            if usage.completion_tokens > 1 and record.status == "ok":
                m.per_chunk.labels(*labels).observe(
                    streamed_ms / 1000 / (usage.completion_tokens - 1)
                )
        for before, after in zip(record.tries, record.tries[1:], strict=False):
            m.retries.labels(after.backend, before.outcome).inc()
        for attempt in record.tries:
            if attempt.outcome not in ("ok", "cancelled"):
                m.upstream_errors.labels(attempt.backend, attempt.outcome).inc()
        if record.tries and record.tries[0].tier != record.tier:
            m.fallbacks.labels(record.tries[0].tier, record.tier).inc()


class AnalyticsMetrics:
    """The usage consumer: what it stored, and how long a batch takes to become durable."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "tokenbus_analytics_records",
            "Usage records by outcome: stored, duplicates (already stored), dead_lettered",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("stored", "duplicates", "dead_lettered"):
            self.records.labels(outcome)  # exported as 0 before the first record
        self.batch_seconds = Histogram(
            "tokenbus_analytics_batch_seconds",
            "From a batch of usage records arriving to its rows stored and its offsets committed",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )


class KafkaMetrics:
    """What every service's Kafka clients show: how far behind its consumers are, and what it
    dead-lettered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumer_lag = Gauge(
            "tokenbus_kafka_consumer_lag",
            "Records not yet consumed: the end offset minus the group's committed offset "
            "(workers) or the reader's position (a gateway's reply partitions)",
            ["topic", "partition"],
            registry=registry,
        )
        self.delivery = Histogram(
            "tokenbus_kafka_event_delivery_seconds",
            "From a worker making a request's first or last event to the gateway's reader "
            "taking it from Kafka: the produce, the broker and the fetch",
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "tokenbus_dead_letters",
            "Messages this service could not accept and sent to a dead-letter topic",
            ["topic"],
            registry=registry,
        )

    async def follow_lag(
        self, measure: Callable[[], Awaitable[dict[TopicPartition, int]]], every_s: float = 5.0
    ) -> None:
        """Refresh the lag gauge from `measure` until cancelled; a partition no longer held
        drops its series, and a failed measurement keeps the last values."""
        shown: set[tuple[str, str]] = set()
        while True:
            try:
                lags = await measure()
            except (KafkaError, OSError) as exc:
                log.warning("lag_measure_failed", error=type(exc).__name__)
            else:
                now = {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items()}
                for gone in shown - now.keys():
                    self.consumer_lag.remove(*gone)
                for labels, lag in now.items():
                    self.consumer_lag.labels(*labels).set(lag)
                shown = set(now)
            await asyncio.sleep(every_s)


async def group_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Lag of the consumer's group on the partitions it holds (what KEDA scales on)."""
    held = list(consumer.assignment())
    if not held:
        return {}
    ends = await consumer.end_offsets(held)
    lags = {}
    for tp in held:
        committed = await consumer.committed(tp)
        lags[tp] = max(0, ends[tp] - (committed or 0))
    return lags


async def reader_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """How far an assigned reader (no group) is behind the end of its partitions."""
    held = list(consumer.assignment())
    if not held:
        return {}
    ends = await consumer.end_offsets(held)
    return {tp: max(0, ends[tp] - await consumer.position(tp)) for tp in held}
