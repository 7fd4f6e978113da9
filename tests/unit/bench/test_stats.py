"""The benchmark's statistics, answer checks and targets, on made-up numbers."""

import json
import math
from typing import Any

import pytest

from services.bench.client import Stream
from services.bench.load import MISMATCH, check
from services.bench.stats import (
    added,
    added_token_latency,
    baseline,
    dist_ms,
    evaluate_targets,
    quantile,
    token_arrivals,
    token_ends,
)


def test_quantile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 0.5) == 50
    assert quantile(values, 0.99) == 99
    assert quantile(values, 1.0) == 100
    assert quantile([7.0], 0.99) == 7
    assert math.isnan(quantile([], 0.5))


# Pinned to numbers worked out by hand: the nearest rank is the ceil(q * n)-th smallest value.
@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 0.5, 2),  # rank 2 (a linear interpolation would say 2.5)
        ([1, 2, 3, 4], 0.95, 4),  # rank ceil(3.8) = 4
        ([15, 20, 35, 40, 50], 0.05, 15),  # rank ceil(0.25) = 1
        ([15, 20, 35, 40, 50], 0.3, 20),  # rank ceil(1.5) = 2
        ([15, 20, 35, 40, 50], 0.4, 20),  # rank 2 exactly
        ([15, 20, 35, 40, 50], 0.5, 35),  # rank ceil(2.5) = 3
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.25, 7),  # rank ceil(2.5) = 3
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.5, 8),  # rank 5
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.75, 15),  # rank ceil(7.5) = 8
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.95, 20),  # rank ceil(9.5) = 10
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.0, 3),  # rank 0 is clamped to the first
    ],
)
def test_quantile_pinned_values(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == expected


def test_dist_ms_converts_seconds_and_counts() -> None:
    d = dist_ms([0.003, 0.001, 0.002])
    assert d == {"p50": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0, "n": 3}
    assert dist_ms([])["n"] == 0


def test_token_arrivals_spread_a_coalesced_piece_over_its_tokens() -> None:
    tokens = ["Hello", " big", " world", "."]
    ends = token_ends(tokens)
    assert ends == [5, 9, 15, 16]
    # t0 = 10: "Hello" at 10.1, " big world" (two tokens in one delta) at 10.3, "." at 10.4
    pieces = [(10.1, "Hello"), (10.3, " big world"), (10.4, ".")]
    got = token_arrivals(pieces, ends, 10.0)
    assert got == pytest.approx([0.1, 0.3, 0.3, 0.4])


def test_added_token_latency_is_against_the_direct_median_per_index() -> None:
    direct = [[0.05, 0.10], [0.07, 0.12], [0.06, 0.11]]
    base = baseline(direct)
    assert base == pytest.approx([0.06, 0.11])
    through = [[0.07, 0.13]]
    assert added_token_latency(through, base) == pytest.approx([0.01, 0.02])


def test_added_is_the_difference_of_percentiles() -> None:
    direct = {"ttft_ms": {"p50": 50.0, "p95": 55.0, "p99": 60.0}}
    path = {
        "ttft_ms": {"p50": 53.5, "p95": 60.0, "p99": 71.0},
        "token_added_ms": {"p50": 4.0, "p99": 9.0},
    }
    assert added(path, direct) == {
        "ttft_p50": 3.5,
        "ttft_p95": 5.0,
        "ttft_p99": 11.0,
        "token_p50": 4.0,
        "token_p99": 9.0,
    }


def _scenario(
    c: int,
    add_p50: float,
    add_p99: float,
    rps: float,
    cpu: float,
    errors: int = 0,
    direct_rps: float = 100.0,
    mismatches: int = 0,
) -> dict[str, Any]:
    row = {
        "errors": errors,
        "mismatches": mismatches,
        "requests_per_s": rps,
        "tokens_per_s": rps * 64,
        "tokenbus_cpu_ms_per_request": cpu,
    }
    return {
        "concurrency": c,
        "direct": {"errors": 0, "mismatches": 0, "requests_per_s": direct_rps},
        "tokenbus": row,
        "added_ms": {"tokenbus": {"ttft_p50": add_p50, "ttft_p99": add_p99}},
    }


def test_targets_pass_miss_and_not_measured() -> None:
    scenarios = [
        _scenario(1, 3.0, 12.0, 2.5, 9.0),
        _scenario(50, 24.0, 40.0, 120.0, 4.0, direct_rps=136.0),
        _scenario(200, 90.0, 240.0, 260.0, 5.5, mismatches=1),
        _scenario(1000, 800.0, 900.0, 300.0, 3.0, errors=2),
    ]
    t = evaluate_targets(scenarios)
    assert t["idle_added_ttft_p50_ms"]["pass"] is True
    assert t["idle_added_ttft_p99_ms"] == {
        "what": "added TTFT p99, 1 stream",
        "target": "<= 10",
        "measured": 12.0,
        "at": "1 stream",
        "pass": False,
    }
    # CPU is judged at 50 and 200 streams, not at the idle scenario's 9 ms.
    assert (t["cpu_ms_per_request_at_50"]["measured"], t["cpu_ms_per_request_at_50"]["pass"]) == (
        4.0,
        True,
    )
    assert t["cpu_ms_per_request_at_200"]["pass"] is False
    # 120 of direct's 136 req/s is 0.882: short of 0.9.
    assert t["throughput_vs_direct_at_50"]["measured"] == 0.882
    assert t["throughput_vs_direct_at_50"]["pass"] is False
    assert t["added_ttft_p50_ms_at_50"]["pass"] is True
    assert t["requests_per_s_at_200"]["pass"] is True
    assert t["tokens_per_s_at_200"]["measured"] == 260.0 * 64
    # One wrong answer at 200 streams fails both that scenario's and the run's clean record.
    assert t["errors_at_200"]["pass"] is False
    assert t["mismatches"] == {
        "what": "text mismatches, every scenario and path",
        "target": "<= 0",
        "measured": 1.0,
        "at": "8 runs",
        "pass": False,
    }
    assert t["errors_at_1000"]["pass"] is False

    quick = evaluate_targets(scenarios[:2])
    assert quick["requests_per_s_at_200"]["pass"] is None
    assert quick["errors_at_1000"]["measured"] is None
    assert quick["cpu_ms_per_request_at_200"]["at"] == "not measured"
    assert quick["mismatches"]["pass"] is True


def _sse(*datas: str) -> list[tuple[float, bytes]]:
    return [(1.0 + i / 10, f"data: {d}\n\n".encode()) for i, d in enumerate(datas)]


def _chunk(text: str) -> str:
    return json.dumps({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}]})


def test_check_accepts_exact_text_and_counts_a_wrong_answer_as_mismatch() -> None:
    expected = ["Hello", " world", "."]
    role = '{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}'
    good = Stream(0, [], t_send=1.0, status=200)
    good.chunks = _sse(role, _chunk("Hello"), _chunk(" world."), "[DONE]")
    outcome = check(good, expected)
    assert outcome.ok
    assert outcome.ttft == pytest.approx(0.1)
    assert outcome.gaps == pytest.approx([0.1])
    assert outcome.arrivals == pytest.approx([0.1, 0.2, 0.2])

    wrong = Stream(1, [], t_send=1.0, status=200)
    wrong.chunks = _sse(_chunk("Hello"), _chunk(" there."), "[DONE]")
    assert check(wrong, expected).reason == MISMATCH

    cut = Stream(2, [], t_send=1.0, status=200)
    cut.chunks = _sse(_chunk("Hello"), '{"error":{"code":"worker_lost","message":"x"}}')
    assert check(cut, expected).reason == "error frame: worker_lost"

    refused = Stream(3, [], t_send=1.0, status=503)
    assert check(refused, expected).reason.startswith("http_503")
