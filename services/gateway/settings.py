"""GatewaySettings: listener, reply partitions, tenants, stream limits."""

from pydantic import Field

from services.common.settings import (
    HttpSettings,
    KafkaSettings,
    LogSettings,
    ModelsSettings,
    TelemetrySettings,
)
from services.gateway.limits import InputLimits


class GatewaySettings(KafkaSettings, HttpSettings, LogSettings, TelemetrySettings, ModelsSettings):
    """One gateway node; each node owns the reply partitions it names."""

    limits: InputLimits = Field(
        default_factory=InputLimits,
        description="Input limits (env: TOKENBUS_LIMITS__MAX_MESSAGES=100, ...)",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (the web chat is same-origin)",
        examples=[["https://chat.example.com"]],
    )
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port", examples=[8080])
    reply_partitions: list[int] = Field(
        default=[0],
        min_length=1,
        description="Partitions of llm.tokens this node reads (disjoint across nodes)",
        examples=[[0], [1, 3]],
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API key -> tenant; empty = open development mode (tenant 'dev')",
        examples=[{"sk-dev": "dev"}],
    )
    subscriber_buffer: int = Field(
        default=4096, ge=16, description="Events buffered per watcher before it is dropped"
    )
    watcher_stall_s: float = Field(
        default=10.0, gt=0, description="A resuming watcher that reads nothing this long is dropped"
    )
    first_event_timeout_s: float = Field(
        default=60.0, gt=0, description="Give up (503) if no worker takes the request by then"
    )
    disconnect_grace_s: float = Field(
        default=30.0, ge=0, description="Keep generating this long for a client that left"
    )
    send_timeout_s: float = Field(
        default=60.0, gt=0, description="Close a client that accepts no bytes for this long"
    )
    idle_timeout_s: float = Field(
        default=120.0, gt=0, description="End a stream with an error after this long silent"
    )
    ws_heartbeat_s: float = Field(
        default=20.0, gt=0, description="Send a WebSocket `heartbeat` after this long idle"
    )
