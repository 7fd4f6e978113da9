"""Settings of llmsim, the OpenAI-compatible model simulator (`TOKENBUS_LLMSIM_*`)."""

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import HttpSettings, LogSettings
from services.llmsim.faults import FaultSpecError, parse_fault


class SpeedProfile(BaseModel):
    """The pace of one model, in place of the global `ttft_ms` and `tokens_per_second`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_ms: float = Field(ge=0, description="Time to first token, ms")
    tokens_per_second: float = Field(
        description="Pace of tokens after the first; 0 or less means as fast as possible"
    )


class LlmsimSettings(HttpSettings, LogSettings):
    """How fast llmsim answers, how long its answers are, and which models it lists."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENBUS_LLMSIM_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    port: int = Field(default=8090, ge=0, le=65535, description="Port to bind", examples=[8090])
    ttft_ms: float = Field(
        default=20.0, ge=0, description="Time to first token, ms", examples=[20.0, 0.0]
    )
    tokens_per_second: float = Field(
        default=200.0,
        description="Pace of tokens after the first; 0 or less means as fast as possible",
        examples=[200.0, 0.0],
    )
    profiles: dict[str, SpeedProfile] = Field(
        default_factory=dict,
        description="Pace per model name (JSON); models not named here use the global pace",
        examples=[{"llmsim-large": {"ttft_ms": 300, "tokens_per_second": 40}}],
    )
    fault: str = Field(
        default="",
        description="Fault injected into every request (see services/llmsim/faults.py); "
        "empty means none",
        examples=["", "stall:2000;after:5", "fail_times:2;status:503"],
    )
    default_max_tokens: int = Field(
        default=64, ge=1, description="Answer length when the request sets no limit", examples=[64]
    )
    model_names: list[str] = Field(
        default_factory=lambda: ["llmsim-small", "llmsim-large"],
        description="Models listed by /v1/models (any model name is accepted)",
        examples=[["llmsim-small", "llmsim-large"]],
    )

    @field_validator("fault")
    @classmethod
    def _valid_fault(cls, spec: str) -> str:
        try:
            parse_fault(spec)
        except FaultSpecError as exc:
            raise ValueError(f"invalid fault spec {spec!r}: {exc}") from None
        return spec
