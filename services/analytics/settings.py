"""AnalyticsSettings: consumer group, database, batching, admin key, rebuild."""

from pydantic import Field, SecretStr, field_validator

from services.common.settings import (
    DEFAULT_DATABASE_URL,
    HttpSettings,
    KafkaSettings,
    LogSettings,
    TelemetrySettings,
)
from services.tenants.settings import TenantStoreSettings

__all__ = ["DEFAULT_DATABASE_URL", "AnalyticsSettings"]


class AnalyticsSettings(
    KafkaSettings, HttpSettings, LogSettings, TelemetrySettings, TenantStoreSettings
):
    """One analytics process: consumes `llm.usage` into SQL and serves `GET /v1/usage`."""

    port: int = Field(default=8081, ge=0, le=65535, description="Usage API, health and metrics")
    group_id: str = Field(default="analytics", description="Kafka consumer group")
    batch_max: int = Field(
        default=500, ge=1, le=5000, description="Most records fetched and stored in one transaction"
    )
    batch_wait_ms: int = Field(
        default=50, ge=1, description="Longest wait for records before a fetch returns"
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Bearer key that sees every tenant; unset = open (development) mode",
    )
    from_beginning: bool = Field(
        default=False,
        description="Rebuild: recreate the tables and re-read the usage topic from offset 0",
    )
    reset_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a rebuild waits for the group to be empty"
    )

    @field_validator("admin_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes `${VAR:-}`: an empty key must mean "no key", never "the key ''".
        return None if value == "" else value
