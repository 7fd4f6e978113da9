"""Model tiers as configuration: each tier an ordered list of OpenAI-compatible backends."""

import os

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

TIER_NAMES = ("small", "large")


class BackendSpec(BaseModel):
    """One OpenAI-compatible endpoint serving one model."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Name in logs, metrics and usage")
    base_url: HttpUrl = Field(description="OpenAI-compatible base URL, ending in /v1")
    model: str = Field(description="Model name sent to the backend")
    api_key_env: str | None = Field(default=None, description="Env var holding the API key")
    timeout_s: float = Field(default=600.0, gt=0, description="Whole-call timeout")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout")

    def api_key(self) -> str:
        # Backends such as llmsim or vLLM ignore the key, but the SDK insists on one.
        return os.environ.get(self.api_key_env, "") if self.api_key_env else "unused"


class ModelsConfig(BaseModel):
    """The tiers: each an ordered list of backends (the first is preferred)."""

    model_config = ConfigDict(frozen=True)

    profile: str = Field(description="Where this config came from: sim | openai | a file")
    tiers: dict[str, tuple[BackendSpec, ...]] = Field(description="Tier name -> backends")

    def concrete_models(self) -> list[str]:
        return sorted({b.model for backends in self.tiers.values() for b in backends})


def sim_profile(llmsim_url: str) -> ModelsConfig:
    """Both tiers on the local llmsim (tests, benchmarks, `make run` without a key)."""
    return ModelsConfig(
        profile="sim",
        tiers={
            "small": (BackendSpec(name="llmsim-small", base_url=llmsim_url, model="llmsim-small"),),
            "large": (BackendSpec(name="llmsim-large", base_url=llmsim_url, model="llmsim-large"),),
        },
    )


def openai_profile() -> ModelsConfig:
    """OpenAI's API: small = gpt-4.1-mini, large = gpt-4.1 (key from OPENAI_API_KEY)."""
    url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")

    def backend(model: str) -> BackendSpec:
        return BackendSpec(
            name=f"openai-{model}", base_url=url, model=model, api_key_env="OPENAI_API_KEY"
        )

    return ModelsConfig(
        profile="openai",
        tiers={"small": (backend("gpt-4.1-mini"),), "large": (backend("gpt-4.1"),)},
    )


def load_models(profile: str | None, llmsim_url: str) -> ModelsConfig:
    """`TOKENBUS_MODELS` names a profile; unset: openai if OPENAI_API_KEY is set, else sim."""
    chosen = profile or ("openai" if os.environ.get("OPENAI_API_KEY") else "sim")
    if chosen == "sim":
        return sim_profile(llmsim_url)
    if chosen == "openai":
        return openai_profile()
    raise ValueError(f"unknown models profile {chosen!r}: expected 'sim' or 'openai'")
