"""The metrics module: every name documented once, and the worker's record of one request."""

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from contracts import BackendTry, ErrorCode, TokenUsage, UsageRecorded, utcnow
from services.common.metrics import AnalyticsMetrics, GatewayMetrics, KafkaMetrics, WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]


def _names(registry: CollectorRegistry) -> set[str]:
    """As Prometheus shows them: a counter `x` is scraped as `x_total`."""
    return {f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()}


def exported() -> set[str]:
    """Every metric family the gateway and the worker define in the metrics module."""
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    WorkerMetrics(registry)
    KafkaMetrics(registry)
    AnalyticsMetrics(registry)
    return _names(registry)


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    # A table row per metric: | `name` | type | labels | meaning |
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.MULTILINE))
    module = exported()
    assert module <= documented, f"undocumented: {sorted(module - documented)}"
    # The gauges the services define next to their state are documented too; nothing else.
    others = documented - module
    for name in others:
        assert name.startswith(
            ("tokenbus_gateway_", "tokenbus_inference_", "tokenbus_analytics_")
        ), name


def _try(backend: str, tier: str, outcome: str) -> BackendTry:
    return BackendTry(backend=backend, model="m", tier=tier, outcome=outcome, duration_ms=3)


def _record(**overrides: object) -> UsageRecorded:
    fields: dict[str, object] = {
        "request_id": "r",
        "attempt": "a",
        "tenant_id": "t",
        "route": "explicit",
        "tier": "large",
        "backend": "big-1",
        "model": "llmsim-large",
        "usage": TokenUsage(prompt_tokens=7, completion_tokens=11, total_tokens=18),
        "cost_usd": 0.002,
        "ttft_ms": 80.0,
        "duration_ms": 580.0,
        "status": "ok",
        "tries": (
            _try("small-1", "small", "backend_unavailable"),
            _try("small-1", "small", "backend_unavailable"),
            _try("big-1", "large", "ok"),
        ),
        "started_at": utcnow(),
        "finished_at": utcnow(),
    }
    return UsageRecorded(**(fields | overrides))  # type: ignore[arg-type]


def test_a_request_that_fell_back_counts_tokens_cost_retries_errors_and_the_fallback() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry).finished(_record())
    value = registry.get_sample_value
    answered = {"gen_ai_operation_name": "chat", "backend": "big-1", "tier": "large",
                "gen_ai_response_model": "llmsim-large"}  # fmt: skip
    assert value("gen_ai_client_token_usage_sum", answered | {"gen_ai_token_type": "output"}) == 11
    assert value("gen_ai_client_token_usage_sum", answered | {"gen_ai_token_type": "input"}) == 7
    assert value("gen_ai_client_operation_time_to_first_chunk_seconds_sum", answered) == 0.08
    # (580 - 80) ms over the 10 chunks after the first.
    per_chunk = value("gen_ai_client_operation_time_per_output_chunk_seconds_sum", answered)
    assert abs(per_chunk - 0.05) < 1e-9
    assert (
        value("tokenbus_inference_cost_usd_total", {"backend": "big-1", "tier": "large"}) == 0.002
    )
    assert value("tokenbus_inference_routes_total", {"tier": "small", "reason": "explicit"}) == 1
    errors = {"backend": "small-1", "code": "backend_unavailable"}
    assert value("tokenbus_inference_upstream_errors_total", errors) == 2
    # Two tries followed a failure: one on the same backend, one on the fallback's.
    assert value("tokenbus_inference_retries_total", errors) == 1
    after_fallback = {"backend": "big-1", "code": "backend_unavailable"}
    assert value("tokenbus_inference_retries_total", after_fallback) == 1
    fell = {"from_tier": "small", "to_tier": "large"}
    assert value("tokenbus_inference_fallbacks_total", fell) == 1


def test_a_failed_request_is_labelled_with_its_error_and_has_no_time_per_chunk() -> None:
    registry = CollectorRegistry()
    record = _record(status="failed", error_code=ErrorCode.STREAM_TIMEOUT, tries=())
    WorkerMetrics(registry).finished(record)
    labels = {"gen_ai_operation_name": "chat", "backend": "big-1", "tier": "large",
              "gen_ai_response_model": "llmsim-large"}  # fmt: skip
    count = registry.get_sample_value(
        "gen_ai_client_operation_duration_seconds_count", labels | {"error_type": "stream_timeout"}
    )
    assert count == 1
    assert (
        registry.get_sample_value(
            "gen_ai_client_operation_time_per_output_chunk_seconds_count", labels
        )
        is None
    )


async def test_lag_series_follow_the_partitions_held_and_survive_a_failed_measurement() -> None:
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaConnectionError

    registry = CollectorRegistry()
    metrics = KafkaMetrics(registry)
    a, b = TopicPartition("llm.requests", 0), TopicPartition("llm.requests", 1)
    readings: list[object] = [{a: 3, b: 0}, KafkaConnectionError(), {b: 7}]
    done = asyncio.Event()

    async def measure() -> dict[TopicPartition, int]:
        reading = readings.pop(0)
        if not readings:
            done.set()
        if isinstance(reading, Exception):
            raise reading
        return reading  # type: ignore[return-value]

    def lag(tp: TopicPartition) -> float | None:
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        return registry.get_sample_value("tokenbus_kafka_consumer_lag", labels)

    task = asyncio.create_task(metrics.follow_lag(measure, every_s=0))
    try:
        async with asyncio.timeout(5):
            await done.wait()  # set inside the last measure; applied before follow_lag yields
    finally:
        task.cancel()
    assert lag(b) == 7
    assert lag(a) is None  # no longer held: its series is gone, not frozen at 3
