"""Model tiers as configuration: each tier an ordered list of OpenAI-compatible backends.

`TOKENBUS_MODELS` names a built-in profile (`local`, `openai`, `sim`) or a YAML/TOML tiers
file; see `infra/models/*.yaml` for examples.
"""

import os
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from contracts import TokenUsage

TIER_NAMES = ("small", "large")
LOCALMODEL_URL = "http://127.0.0.1:8091/v1"
LOCALMODEL_MODEL = "smollm2-135m"  # the alias the localmodel server answers as
LOCALMODEL_PARALLEL = 4  # the localmodel server's default slots (TOKENBUS_LOCALMODEL_PARALLEL)


class BackendSpec(BaseModel):
    """One OpenAI-compatible endpoint serving one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Name in logs, metrics and usage")
    base_url: HttpUrl = Field(description="OpenAI-compatible base URL, ending in /v1")
    model: str = Field(description="Model name sent to the backend")
    api_key_env: str | None = Field(default=None, description="Env var holding the API key")
    max_concurrency: int = Field(default=64, ge=1, description="Generations at once, per worker")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout")
    first_token_timeout_s: float = Field(default=60.0, gt=0, description="Retry if slower")
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Fail a stream silent this long (detected within 1.5 x this)",
    )
    input_price_per_1m: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    output_price_per_1m: float = Field(default=0.0, ge=0, description="USD per 1M output tokens")

    def api_key(self) -> str:
        # Backends such as llmsim or vLLM ignore the key, but the SDK insists on one.
        return os.environ.get(self.api_key_env, "") if self.api_key_env else "unused"

    def cost_usd(self, usage: TokenUsage) -> float:
        return (
            usage.prompt_tokens * self.input_price_per_1m
            + usage.completion_tokens * self.output_price_per_1m
        ) / 1_000_000


class RetryPolicy(BaseModel):
    """Retries of one backend before the first token: exponential backoff with jitter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=3, ge=1, description="Tries per backend, the first included")
    initial_backoff_s: float = Field(default=0.1, ge=0, description="First wait before a retry")
    max_backoff_s: float = Field(default=2.0, ge=0, description="Cap of one wait")


class ModelsConfig(BaseModel):
    """The tiers: each an ordered list of backends (the first is preferred)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = Field(
        description="Where this config came from: local | openai | sim | a file path"
    )
    tiers: dict[str, tuple[BackendSpec, ...]] = Field(description="Tier name -> backends")
    fallback: dict[str, str] = Field(
        default_factory=lambda: {"small": "large", "large": "small"},
        description="Tier to try when every backend of a tier failed before the first token",
    )
    context_budgets: dict[str, int] = Field(
        default_factory=dict,
        description="Context budget in tokens per tier, for conversations (default: the "
        "gateway's context_budget_tokens)",
    )
    route_threshold: float | None = Field(
        default=None, description="Complexity score above which `auto` goes to large"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _check(self) -> "ModelsConfig":
        for tier in TIER_NAMES:
            if not self.tiers.get(tier):
                raise ValueError(f"tier {tier!r} needs at least one backend")
        for source, target in self.fallback.items():
            if target not in self.tiers or source not in self.tiers:
                raise ValueError(f"fallback {source!r} -> {target!r} names an unknown tier")
        names = [b.name for backends in self.tiers.values() for b in backends]
        if len(names) != len(set(names)):
            raise ValueError("backend names must be unique")
        return self

    def concrete_models(self) -> list[str]:
        return sorted({b.model for backends in self.tiers.values() for b in backends})


def sim_profile(llmsim_url: str) -> ModelsConfig:
    """Both tiers on the local llmsim; llmsim paces `llmsim-large` slower when told to."""

    def backend(model: str, price_in: float, price_out: float) -> dict[str, Any]:
        return {
            "name": model,
            "base_url": llmsim_url,
            "model": model,
            "max_concurrency": 512,
            "input_price_per_1m": price_in,
            "output_price_per_1m": price_out,
        }

    return ModelsConfig.model_validate(
        {
            "profile": "sim",
            "tiers": {
                "small": [backend("llmsim-small", 0.40, 1.60)],  # priced like the openai profile,
                "large": [backend("llmsim-large", 2.00, 8.00)],  # so cost reports read the same
            },
        }
    )


def local_profile(
    localmodel_url: str = LOCALMODEL_URL, parallel: int = LOCALMODEL_PARALLEL
) -> ModelsConfig:
    """Both tiers on the bundled local model (`tokenbus localmodel`: SmolLM2-135M-Instruct on
    llama.cpp, free). Each backend runs at most `parallel` generations per worker, the
    server's slots; more would only wait in llama.cpp's queue."""

    def backend(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "base_url": localmodel_url,
            "model": LOCALMODEL_MODEL,
            "max_concurrency": parallel,
            # A CPU model: the first token waits for the prompt to be read, and for a free
            # slot when every slot is busy.
            "first_token_timeout_s": 120.0,
        }

    return ModelsConfig.model_validate(
        {
            "profile": "local",
            "tiers": {"small": [backend("local-small")], "large": [backend("local-large")]},
        }
    )


def openai_profile() -> ModelsConfig:
    """OpenAI's API: small = gpt-4.1-mini, large = gpt-4.1 (key from OPENAI_API_KEY)."""
    url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")

    def backend(model: str, price_in: float, price_out: float) -> dict[str, Any]:
        return {
            "name": f"openai-{model}",
            "base_url": url,
            "model": model,
            "api_key_env": "OPENAI_API_KEY",
            "input_price_per_1m": price_in,
            "output_price_per_1m": price_out,
        }

    return ModelsConfig.model_validate(
        {
            "profile": "openai",
            "tiers": {
                "small": [backend("gpt-4.1-mini", 0.40, 1.60)],
                "large": [backend("gpt-4.1", 2.00, 8.00)],
            },
        }
    )


def load_file(path: Path) -> ModelsConfig:
    """A tiers file, YAML or TOML (by extension); `${VAR}` in base URLs is expanded."""
    text = os.path.expandvars(path.read_text())
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with `tiers`")
    return ModelsConfig.model_validate({**data, "profile": str(path)})


def load_models(
    spec: str | None,
    llmsim_url: str,
    *,
    localmodel_url: str = LOCALMODEL_URL,
    localmodel_parallel: int = LOCALMODEL_PARALLEL,
) -> ModelsConfig:
    """`TOKENBUS_MODELS` names a profile or a file; unset: `openai` if OPENAI_API_KEY is set,
    else `local` (the bundled local model). `sim` (llmsim) only when asked for."""
    chosen = spec or ("openai" if os.environ.get("OPENAI_API_KEY") else "local")
    if chosen == "local":
        return local_profile(localmodel_url, localmodel_parallel)
    if chosen == "sim":
        return sim_profile(llmsim_url)
    if chosen == "openai":
        return openai_profile()
    path = Path(chosen)
    if path.suffix in (".yaml", ".yml", ".toml") or path.exists():
        return load_file(path)
    raise ValueError(
        f"TOKENBUS_MODELS={chosen!r}: expected 'local', 'openai', 'sim' or a tiers file"
    )
