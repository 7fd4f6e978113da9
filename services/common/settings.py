"""Settings mixins; each service composes its one Settings class from these."""

import os
import socket
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import TOPICS, Topics

ENV_PREFIX = "TOKENBUS_"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./.run/analytics.db"


class ServiceSettings(BaseSettings):
    """Root of every service's settings: `TOKENBUS_*` environment variables, nested by `__`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    instance: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Name of this process in logs and metrics",
        examples=["gateway-0"],
    )


class KafkaSettings(ServiceSettings):
    """Where the Kafka cluster is and how topics are named."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("TOKENBUS_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Comma-separated Kafka bootstrap servers",
        examples=["127.0.0.1:9092", "kafka:9092"],
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix for every topic name (isolates tests or deployments sharing a cluster)",
        examples=["", "staging."],
    )

    @property
    def topics(self) -> Topics:
        return TOPICS.with_prefix(self.topic_prefix)


class HttpSettings(ServiceSettings):
    """The service's HTTP listener (API, health and metrics)."""

    host: str = Field(default="127.0.0.1", description="Address to bind", examples=["0.0.0.0"])
    port: int = Field(default=8080, ge=0, le=65535, description="Port to bind", examples=[8080])
    keep_alive_s: float = Field(
        default=75.0,
        ge=1,
        description="How long an idle client connection stays open: longer than a load"
        " balancer's idle timeout (60 s on AWS) and a client pool's, so the server never closes"
        " a connection just as a client reuses it",
    )


class LogSettings(ServiceSettings):
    """Structured logging."""

    log_level: str = Field(default="INFO", description="Python log level", examples=["DEBUG"])
    log_format: str = Field(
        default="auto",
        pattern="^(auto|json|console)$",
        description="json, console, or auto (console on a TTY, JSON otherwise)",
    )
    log_content: Literal["off", "redacted"] = Field(
        default="off",
        description="Prompts and answers in logs: off (never), or redacted (a short, masked "
        "excerpt, for debugging)",
        examples=["off", "redacted"],
    )


class DatabaseSettings(ServiceSettings):
    """The SQL database of usage, tenants, keys and rate-limit counters."""

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("TOKENBUS_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy async URL: SQLite (aiosqlite) or PostgreSQL (asyncpg)",
        examples=[DEFAULT_DATABASE_URL, "postgresql+asyncpg://tokenbus:tokenbus@postgres/tokenbus"],
    )


class TelemetrySettings(ServiceSettings):
    """OpenTelemetry tracing; spans are exported only when an endpoint is set."""

    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TOKENBUS_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP endpoint for traces; unset means traces stay in-process",
        examples=["http://otel-collector:4318"],
    )


class ModelsSettings(ServiceSettings):
    """Which model tiers serve requests (workers call them; the gateway lists them)."""

    models: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TOKENBUS_MODELS"),
        description="Models profile: local | openai | sim, or a tiers file; unset: openai "
        "with OPENAI_API_KEY, else local (the bundled local model)",
        examples=["local", "openai", "sim"],
    )
    llmsim_url: str = Field(
        default="http://127.0.0.1:8090/v1", description="llmsim base URL for the sim profile"
    )
    localmodel_url: str = Field(
        default="http://127.0.0.1:8091/v1",
        validation_alias=AliasChoices("TOKENBUS_LOCALMODEL_URL"),
        description="Base URL of `tokenbus localmodel` for the local profile",
        examples=["http://127.0.0.1:8091/v1", "http://localmodel:8091/v1"],
    )
    localmodel_parallel: int = Field(
        default=4,
        ge=1,
        validation_alias=AliasChoices("TOKENBUS_LOCALMODEL_PARALLEL"),
        description="Generations at once per worker on each local tier: the local model "
        "server's slots (the same variable sets them there)",
        examples=[4],
    )
