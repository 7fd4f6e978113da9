"""InferenceSettings: consumer group, concurrency, coalescing, backends."""

from pydantic import Field

from services.common.settings import (
    HttpSettings,
    KafkaSettings,
    LogSettings,
    ModelsSettings,
    TelemetrySettings,
)


class InferenceSettings(
    KafkaSettings, HttpSettings, LogSettings, TelemetrySettings, ModelsSettings
):
    """One worker process; run more of them to scale (they share the consumer group)."""

    port: int = Field(default=8070, ge=0, le=65535, description="Health and metrics port")
    group_id: str = Field(default="inference", description="Kafka consumer group of the workers")
    max_concurrency: int = Field(
        default=256, ge=1, description="Generations one worker runs at once; full = stop fetching"
    )
    coalesce_ms: float = Field(
        default=10.0,
        ge=0,
        description="Merge tokens into one delta per window when the worker runs one stream"
        " (0 = one delta per token, at any load); the first token is never held back",
    )
    coalesce_busy_ms: float = Field(
        default=50.0,
        ge=0,
        description="The window once `coalesce_busy_at` more generations run beside a stream:"
        " fewer, larger messages when per-message CPU is what queues requests",
    )
    coalesce_busy_at: int = Field(
        default=8, ge=1, description="Generations running beside a stream for the busy window"
    )
    stale_after_s: float = Field(
        default=300.0, gt=0, description="A request older than this is failed, not generated"
    )
    deadline_s: float = Field(
        default=600.0, gt=0, description="Deadline of a request that did not set its own"
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On shutdown, how long in-flight generations may finish"
    )
    gateway_silence_s: float = Field(
        default=10.0,
        gt=0,
        description="A gateway node silent this long is gone: its clients count as detached"
        " (their generations run on for its grace period, then stop unless resumed elsewhere)",
    )
    session_timeout_ms: int = Field(
        default=10_000, ge=6_000, description="Kafka group session timeout (failover time)"
    )
