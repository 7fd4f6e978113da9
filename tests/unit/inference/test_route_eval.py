"""Router evaluation: metrics, cost against all-large, the report, and the CLI command."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.inference.route_eval import (
    DEFAULT_PRICES,
    OUTPUT_TOKENS,
    bench_scoring,
    evaluate,
    format_report,
    request_cost,
)

PROOF = "Prove that there are infinitely many primes of the form 6k+5."
HELLO = "hi there"


def row(id_: str, text: str, label: str) -> dict[str, object]:
    return {"id": id_, "messages": [{"role": "user", "content": text}], "label": label}


# One of each confusion cell: the router sends PROOF large and HELLO small.
ROWS = [
    row("tp", PROOF, "large"),
    row("fp", PROOF, "small"),
    row("fn", HELLO, "large"),
    row("tn", HELLO, "small"),
    row("tn2", "what's the capital of Peru", "small"),
]


class TestMetrics:
    def test_confusion_and_rates_on_a_hand_made_set(self) -> None:
        report = evaluate(ROWS, 0.75)
        assert report.confusion == {"tp": 1, "fp": 1, "fn": 1, "tn": 2}
        assert report.accuracy == pytest.approx(3 / 5)
        assert report.precision_large == pytest.approx(1 / 2)
        assert report.recall_large == pytest.approx(1 / 2)
        assert report.share_large == pytest.approx(2 / 5)
        assert report.misrouted_ids == ["fp", "fn"]
        assert {m.id: m.predicted for m in report.misses} == {"fp": "large", "fn": "small"}

    def test_bootstrap_interval_is_fixed_and_brackets_accuracy(self) -> None:
        first, second = evaluate(ROWS, 0.75), evaluate(ROWS, 0.75)
        assert first.accuracy_ci == second.accuracy_ci
        lo, hi = first.accuracy_ci
        assert 0.0 <= lo <= first.accuracy <= hi <= 1.0
        assert evaluate([ROWS[0], ROWS[3]], 0.75).accuracy_ci == (1.0, 1.0)

    def test_threshold_changes_routing(self) -> None:
        assert evaluate(ROWS, 100.0).share_large == 0.0
        assert evaluate(ROWS, -100.0).share_large == 1.0

    def test_empty_set_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="no rows"):
            evaluate([], 0.75)


class TestCost:
    def test_request_cost_uses_chars_over_four_and_fixed_output(self) -> None:
        r = row("x", "a" * 400, "small")
        price_in, price_out = DEFAULT_PRICES["large"]
        expected = (100 * price_in + OUTPUT_TOKENS * price_out) / 1_000_000
        assert request_cost(r, "large", DEFAULT_PRICES) == pytest.approx(expected)

    def test_routing_some_requests_small_costs_less_than_all_large(self) -> None:
        report = evaluate(ROWS, 0.75)
        assert 0 < report.relative_cost < 1
        all_large = sum(request_cost(r, "large", DEFAULT_PRICES) for r in ROWS)
        assert report.cost_all_large == pytest.approx(all_large)

    def test_prices_are_a_parameter(self) -> None:
        flat = {"small": (1.0, 1.0), "large": (1.0, 1.0)}
        assert evaluate(ROWS, 0.75, flat).relative_cost == pytest.approx(1.0)


class TestReportAndBench:
    def test_report_lists_metrics_and_misses(self) -> None:
        text = format_report(evaluate(ROWS, 0.75), show_misses=True)
        for needle in (
            "accuracy",
            "recall (large)",
            "cost vs all-large",
            "fp",
            "fn",
            "label large",
        ):
            assert needle in text
        assert "proof_reasoning" in text  # why `fp` went large

    def test_bench_reports_percentiles_in_microseconds(self) -> None:
        bench = bench_scoring(ROWS, repeats=3)
        assert bench["calls"] == 15
        assert 0 < bench["p50_us"] <= bench["p99_us"] <= bench["max_us"]


class TestCli:
    def test_route_eval_command_prints_report_and_timing(self, tmp_path: Path) -> None:
        path = tmp_path / "set.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
        result = CliRunner().invoke(app, ["route-eval", str(path), "--show-misses"])
        assert result.exit_code == 0, result.output
        assert "accuracy" in result.output
        assert "misrouted (2): fp, fn" in result.output
        assert "p99" in result.output

    def test_threshold_option(self, tmp_path: Path) -> None:
        path = tmp_path / "set.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS), encoding="utf-8")
        result = CliRunner().invoke(app, ["route-eval", str(path), "--threshold", "100"])
        assert result.exit_code == 0, result.output
        assert "threshold 100" in result.output
