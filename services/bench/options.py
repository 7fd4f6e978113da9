"""Benchmark options, from the command line (`tokenbus bench`, `python -m services.bench`)."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from services.inference.settings import InferenceSettings

PRODUCT_COALESCE_MS = float(InferenceSettings.model_fields["coalesce_ms"].default)
PRODUCT_BUSY_MS = float(InferenceSettings.model_fields["coalesce_busy_ms"].default)


@dataclass
class BenchOptions:
    """One run: scenarios (concurrency x path), the coalescing sweep, pacing and outputs."""

    concurrency: list[int] = field(default_factory=lambda: [1, 50, 200, 1000])
    duration_s: float = 10.0  # measured seconds per scenario
    idle_duration_s: float = 40.0  # ... at concurrency 1, for enough samples for a p99
    warmup_s: float = 3.0
    coalesce_ms: float = PRODUCT_COALESCE_MS  # the workers' window alone, main scenarios
    coalesce_busy_ms: float = PRODUCT_BUSY_MS  # ... and under load
    sweep_ms: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 25.0])
    sweep_concurrency: int = 20  # below saturation, so the window, not queueing, shows
    workers: int = 2
    max_concurrency: int = 1200  # TOKENBUS_MAX_CONCURRENCY of each worker
    ttft_ms: float = 50.0
    tokens_per_second: float = 200.0
    max_tokens: int = 64
    model: str = "small"  # what clients ask tokenbus for
    timeout_s: float = 60.0  # per request
    compare_url: str | None = None  # another OpenAI-compatible base URL, ending in /v1
    compare_model: str = "llmsim-small"
    compare_key: str | None = None
    compare_pids: list[int] = field(default_factory=list)
    llmsim_port: int = 0
    json_path: Path | None = None
    plot_path: Path | None = None
    markdown: bool = False
    logs: Path | None = None

    @classmethod
    def quick(cls, **overrides: object) -> "BenchOptions":
        """A smoke run: concurrency 1 and 20, 5 s each, sweep 0 and 10 ms at 20 streams."""
        values: dict[str, object] = {
            "concurrency": [1, 20],
            "duration_s": 5.0,
            "idle_duration_s": 5.0,
            "warmup_s": 2.0,
            "sweep_ms": [0.0, 10.0],
            "sweep_concurrency": 20,
        }
        return cls(**(values | overrides))  # type: ignore[arg-type]


def _numbers(kind: type, text: str) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def parser(prog: str = "python -m services.bench") -> argparse.ArgumentParser:
    d = BenchOptions()
    p = argparse.ArgumentParser(
        prog=prog,
        description="What tokenbus adds on top of the model: the same closed-loop load sent "
        "directly to llmsim and through gateway -> Kafka -> worker -> Kafka -> gateway.",
    )
    add = p.add_argument
    add("--quick", action="store_true", help="smoke run: concurrency 1,20, 5 s each")
    add("--concurrency", type=lambda t: _numbers(int, t), help="e.g. 1,50,200,1000")
    add("--duration", type=float, help=f"measured seconds per scenario ({d.duration_s:g})")
    add("--idle-duration", type=float, help=f"... at concurrency 1 ({d.idle_duration_s:g})")
    add("--warmup", type=float, help=f"unmeasured seconds before each ({d.warmup_s:g})")
    add(
        "--coalesce-ms",
        type=float,
        help=f"workers' window alone, main scenarios ({d.coalesce_ms:g})",
    )
    add("--coalesce-busy-ms", type=float, help=f"... under load ({d.coalesce_busy_ms:g})")
    add("--sweep-ms", type=lambda t: _numbers(float, t), help="coalescing sweep, e.g. 0,5,10,25")
    add("--sweep-concurrency", type=int, help=f"streams during the sweep ({d.sweep_concurrency})")
    add("--workers", type=int, help=f"inference workers ({d.workers})")
    add("--max-concurrency", type=int, help=f"per worker ({d.max_concurrency})")
    add("--ttft-ms", type=float, help=f"llmsim time to first token ({d.ttft_ms:g})")
    add(
        "--tps",
        dest="tokens_per_second",
        type=float,
        help=f"llmsim tokens/s ({d.tokens_per_second:g})",
    )
    add("--max-tokens", type=int, help=f"answer length ({d.max_tokens})")
    add("--model", help=f"model asked of tokenbus ({d.model})")
    add("--timeout", dest="timeout_s", type=float, help=f"per request, s ({d.timeout_s:g})")
    add("--compare-url", help="another OpenAI-compatible gateway (base URL ending in /v1), "
        "pointed at the llmsim this run prints: a third column")  # fmt: skip
    add("--compare-model", help=f"model asked of it ({d.compare_model})")
    add("--compare-key", help="its API key (Authorization: Bearer)")
    add("--compare-pid", dest="compare_pids", type=int, action="append",
        help="its process ids, to measure their CPU (repeatable)")  # fmt: skip
    add("--llmsim-port", type=int, help="start llmsim on this port (default: any free port)")
    add("--json", dest="json_path", type=Path, help="write the results here")
    add("--plot", dest="plot_path", type=Path, help="write a PNG plot here (needs matplotlib)")
    add("--markdown", action="store_true", help="print markdown tables (the README's section)")
    add("--from-json", type=Path, help="only print a previous run's tables from this JSON file")
    add("--logs", type=Path, help="service logs folder (default: a temporary one)")
    return p


def options_from(args: argparse.Namespace) -> BenchOptions:
    renames = {"duration": "duration_s", "idle_duration": "idle_duration_s", "warmup": "warmup_s"}
    given = {
        renames.get(k, k): v
        for k, v in vars(args).items()
        if v is not None and k not in ("quick", "from_json", "markdown")
    }
    given["markdown"] = args.markdown
    return BenchOptions.quick(**given) if args.quick else BenchOptions(**given)
