"""Settings of localmodel, the bundled local LLM server (`TOKENBUS_LOCALMODEL_*`)."""

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import HttpSettings, LogSettings

DEFAULT_PORT = 8091
DEFAULT_PARALLEL = 4
DEFAULT_MODEL_ALIAS = "smollm2-135m"
MIN_CTX_PER_SLOT = 256


def default_threads() -> int:
    """All cores but one. llama.cpp's threads meet at a barrier after every step; when another
    process takes one of their cores, the others wait. On the 2-core machine, with the broker
    and tokenbus's services busy, 2 threads fell to 1-9 tokens/s where 1 thread kept 7-80
    (tests/benchmarks/localmodel_speed.py), and 1 thread is as fast when the machine is idle."""
    return max(1, (os.cpu_count() or 1) - 1)


class LocalModelSettings(HttpSettings, LogSettings):
    """Which model llama.cpp runs, and how many requests it serves at once."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENBUS_LOCALMODEL_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    port: int = Field(
        default=DEFAULT_PORT, ge=0, le=65535, description="Port to bind", examples=[DEFAULT_PORT]
    )
    parallel: int = Field(
        default=DEFAULT_PARALLEL,
        ge=1,
        le=64,
        description="Requests generated at once (llama.cpp slots); more wait for a free slot",
        examples=[DEFAULT_PARALLEL],
    )
    ctx_size: int = Field(
        default=4096,
        ge=MIN_CTX_PER_SLOT,
        description="Context of the whole server in tokens (llama.cpp's --ctx-size), split "
        "evenly between the slots: each request gets ctx_size / parallel tokens for prompt "
        "and answer",
        examples=[4096, 8192],
    )
    threads: int = Field(
        default_factory=default_threads,
        ge=1,
        description="CPU threads for generation and prompt processing (default: all cores but "
        "one, which is left to the broker and tokenbus's own processes)",
        examples=[1, 3],
    )
    model_alias: str = Field(
        default=DEFAULT_MODEL_ALIAS,
        min_length=1,
        description="Model name in /v1/models and in every response",
        examples=[DEFAULT_MODEL_ALIAS],
    )
    model_path: Path | None = Field(
        default=None,
        description="A GGUF file to run instead of the bundled SmolLM2-135M-Instruct",
        examples=[None, "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"],
    )

    @property
    def ctx_per_slot(self) -> int:
        return self.ctx_size // self.parallel

    @model_validator(mode="after")
    def _enough_context_per_slot(self) -> "LocalModelSettings":
        if self.ctx_per_slot < MIN_CTX_PER_SLOT:
            raise ValueError(
                f"ctx_size {self.ctx_size} over {self.parallel} slots leaves "
                f"{self.ctx_per_slot} tokens per request; give each at least {MIN_CTX_PER_SLOT}"
            )
        return self
