"""Offline evaluation of the complexity router on a labelled set: accuracy, cost, speed."""

import json
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.inference.routing import DEFAULT_THRESHOLD, message_text, score_conversation

# USD per 1M (input, output) tokens: gpt-4.1-mini and gpt-4.1 list prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {"small": (0.40, 1.60), "large": (2.00, 8.00)}
OUTPUT_TOKENS = 256  # assumed answer length, the same for both tiers
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240601

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Miss:
    """One misrouted item and why the router decided as it did."""

    id: str
    label: str
    predicted: str
    score: float
    top_features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EvalReport:
    """How a threshold routes a labelled set, against its labels and its cost."""

    n: int
    threshold: float
    accuracy: float
    accuracy_ci: tuple[float, float]
    precision_large: float
    recall_large: float
    share_large: float
    confusion: dict[str, int]  # tp/fp/fn/tn with `large` as the positive class
    cost_routed: float
    cost_all_large: float
    misses: tuple[Miss, ...]

    @property
    def relative_cost(self) -> float:
        return self.cost_routed / self.cost_all_large if self.cost_all_large else 0.0

    @property
    def misrouted_ids(self) -> list[str]:
        return [miss.id for miss in self.misses]


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL set (blank lines skipped)."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def request_cost(row: Row, tier: str, prices: Mapping[str, tuple[float, float]]) -> float:
    """USD for one request: input ~ chars/4 of all messages, output a fixed 256 tokens."""
    input_tokens = sum(len(message_text(m)) for m in row["messages"]) / 4
    price_in, price_out = prices[tier]
    return (input_tokens * price_in + OUTPUT_TOKENS * price_out) / 1_000_000


def _bootstrap_ci(correct: Sequence[bool]) -> tuple[float, float]:
    rng = random.Random(BOOTSTRAP_SEED)
    n = len(correct)
    means = sorted(
        sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return means[int(0.025 * BOOTSTRAP_RESAMPLES)], means[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def evaluate(
    rows: Iterable[Row],
    threshold: float = DEFAULT_THRESHOLD,
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> EvalReport:
    """Route every row at `threshold` and compare with its `label`."""
    prices = prices or DEFAULT_PRICES
    confusion = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    correct: list[bool] = []
    misses: list[Miss] = []
    cost_routed = cost_all_large = 0.0
    for row in rows:
        result = score_conversation(row["messages"], row.get("max_tokens"), threshold)
        label, predicted = row["label"], result.tier
        key = ("t" if label == predicted else "f") + ("p" if predicted == "large" else "n")
        confusion[key] += 1
        correct.append(label == predicted)
        if label != predicted:
            top = tuple(result.top_features())
            misses.append(
                Miss(str(row.get("id", len(correct))), label, predicted, result.score, top)
            )
        cost_routed += request_cost(row, predicted, prices)
        cost_all_large += request_cost(row, "large", prices)
    n = len(correct)
    if not n:
        raise ValueError("no rows to evaluate")
    return EvalReport(
        n=n,
        threshold=threshold,
        accuracy=sum(correct) / n,
        accuracy_ci=_bootstrap_ci(correct),
        precision_large=_ratio(confusion["tp"], confusion["tp"] + confusion["fp"]),
        recall_large=_ratio(confusion["tp"], confusion["tp"] + confusion["fn"]),
        share_large=(confusion["tp"] + confusion["fp"]) / n,
        confusion=confusion,
        cost_routed=cost_routed,
        cost_all_large=cost_all_large,
        misses=tuple(misses),
    )


def format_report(report: EvalReport, show_misses: bool = False) -> str:
    """A readable text table of the report; with `show_misses`, one line per misrouted item."""
    c = report.confusion
    lo, hi = report.accuracy_ci
    lines = [
        f"router evaluation: {report.n} items, threshold {report.threshold:g}",
        "",
        f"  {'accuracy':<24}{report.accuracy:>8.3f}   (95% bootstrap CI {lo:.3f}-{hi:.3f})",
        f"  {'precision (large)':<24}{report.precision_large:>8.3f}",
        f"  {'recall (large)':<24}{report.recall_large:>8.3f}",
        f"  {'share sent to large':<24}{report.share_large:>8.3f}",
        f"  {'cost vs all-large':<24}{report.relative_cost:>8.3f}"
        f"   (${report.cost_routed:.4f} vs ${report.cost_all_large:.4f})",
        "",
        f"  {'':<14}{'pred large':>12}{'pred small':>12}",
        f"  {'label large':<14}{c['tp']:>12}{c['fn']:>12}",
        f"  {'label small':<14}{c['fp']:>12}{c['tn']:>12}",
        "",
        f"  misrouted ({len(report.misses)}): {', '.join(report.misrouted_ids) or 'none'}",
    ]
    if show_misses:
        lines += [
            f"    {m.id:<10} label={m.label:<6} got={m.predicted:<6} score={m.score:+.2f}  "
            f"{', '.join(m.top_features)}"
            for m in report.misses
        ]
    return "\n".join(lines)


def bench_scoring(rows: Sequence[Row], repeats: int = 20) -> dict[str, float]:
    """Microseconds per `score_conversation` call over all rows, `repeats` times each."""
    for row in rows:  # warm-up: first calls pay for lazy caches
        score_conversation(row["messages"])
    samples: list[float] = []
    for _ in range(repeats):
        for row in rows:
            start = time.perf_counter_ns()
            score_conversation(row["messages"], row.get("max_tokens"))
            samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "calls": float(len(samples)),
        "p50_us": statistics.median(samples),
        "p99_us": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "max_us": samples[-1],
    }
