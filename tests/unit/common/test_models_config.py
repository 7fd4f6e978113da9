"""Tiers configuration: profiles, files, and the mistakes that must fail at startup."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import TokenUsage
from services.common.models import load_models
from services.common.settings import ModelsSettings

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "infra" / "models" / "openai-and-vllm.yaml"


class TestProfiles:
    def test_local_is_the_default_without_an_openai_key(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        assert load_models(None, "http://sim/v1").profile == "local"
        assert load_models("", "http://sim/v1").profile == "local"  # compose's empty default

    def test_the_local_profile_puts_both_tiers_on_the_local_model_for_free(self):
        config = load_models(
            "local", "http://sim/v1", localmodel_url="http://lm:9/v1", localmodel_parallel=2
        )
        assert config.profile == "local"
        small, large = config.tiers["small"], config.tiers["large"]
        assert [b.name for b in small] == ["local-small"]
        assert [b.name for b in large] == ["local-large"]
        for backend in (*small, *large):
            assert str(backend.base_url) == "http://lm:9/v1"
            assert backend.model == "smollm2-135m"
            assert backend.max_concurrency == 2  # the server's slots
            assert backend.api_key() == "unused"
            usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
            assert backend.cost_usd(usage) == 0.0
        assert config.concrete_models() == ["smollm2-135m"]

    def test_the_local_profile_defaults_to_the_local_model_server_port(self):
        config = load_models("local", "http://sim/v1")
        backend = config.tiers["small"][0]
        assert str(backend.base_url) == "http://127.0.0.1:8091/v1"
        assert backend.max_concurrency == 4

    def test_sim_only_when_asked_for(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        config = load_models("sim", "http://sim/v1")
        assert config.profile == "sim"
        assert config.concrete_models() == ["llmsim-large", "llmsim-small"]

    def test_models_settings_read_the_local_model_url_and_slots(
        self, monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_URL", "http://localmodel:8091/v1")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_PARALLEL", "3")
        settings = ModelsSettings()
        assert settings.localmodel_url == "http://localmodel:8091/v1"
        assert settings.localmodel_parallel == 3
        monkeypatch.delenv("TOKENBUS_LOCALMODEL_URL")
        monkeypatch.delenv("TOKENBUS_LOCALMODEL_PARALLEL")
        assert ModelsSettings().localmodel_url == "http://127.0.0.1:8091/v1"

    def test_openai_is_the_default_with_a_key(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
        config = load_models(None, "http://sim/v1")
        assert config.profile == "openai"
        assert [b.model for b in config.tiers["small"]] == ["gpt-4.1-mini"]
        assert [b.model for b in config.tiers["large"]] == ["gpt-4.1"]

    def test_an_unknown_profile_is_refused(self):
        with pytest.raises(ValueError, match="expected 'local', 'openai', 'sim' or a tiers file"):
            load_models("gpt", "http://sim/v1")


class TestFiles:
    def test_the_example_file_loads_with_env_expanded(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("VLLM_URL", "http://vllm:8000/v1")
        config = load_models(str(EXAMPLE), "unused")
        assert [b.name for b in config.tiers["small"]] == ["vllm-qwen", "openai-mini"]
        assert str(config.tiers["small"][0].base_url) == "http://vllm:8000/v1"
        assert config.route_threshold == 0.5 and config.retry.attempts == 3

    def test_prices_give_the_cost_of_usage(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("VLLM_URL", "http://vllm:8000/v1")
        large = load_models(str(EXAMPLE), "unused").tiers["large"][0]
        usage = TokenUsage(prompt_tokens=1_000_000, completion_tokens=500_000)
        assert large.cost_usd(usage) == pytest.approx(2.00 + 4.00)

    @pytest.mark.parametrize(
        ("text", "error"),
        [
            ("tiers: {small: []}\n", "needs at least one backend"),
            (
                "tiers:\n  small: [{name: a, base_url: 'http://a/v1', model: m}]\n"
                "  large: [{name: b, base_url: 'http://b/v1', model: m}]\n"
                "fallback: {small: medium}\n",
                "unknown tier",
            ),
            (
                "tiers:\n  small: [{name: a, base_url: 'http://a/v1', model: m}]\n"
                "  large: [{name: a, base_url: 'http://b/v1', model: m}]\n",
                "unique",
            ),
            ("tiers:\n  small: [{name: a, base_url: 'not a url', model: m}]\n", "base_url"),
            ("tiers:\n  small: [{name: a, base_url: 'http://a/v1', model: m, typo: 1}]\n", "typo"),
        ],
        ids=["empty-tier", "unknown-fallback", "duplicate-names", "bad-url", "unknown-field"],
    )
    def test_a_wrong_file_fails_at_startup(self, tmp_path: Path, text: str, error: str):
        path = tmp_path / "tiers.yaml"
        path.write_text(text)
        with pytest.raises(ValidationError, match=error):
            load_models(str(path), "unused")

    def test_toml_files_work_too(self, tmp_path: Path):
        path = tmp_path / "tiers.toml"
        path.write_text(
            '[[tiers.small]]\nname = "a"\nbase_url = "http://a/v1"\nmodel = "m"\n'
            '[[tiers.large]]\nname = "b"\nbase_url = "http://b/v1"\nmodel = "n"\n'
        )
        assert load_models(str(path), "unused").concrete_models() == ["m", "n"]
