"""Pure statistics of a run: quantiles, token arrival times, added latency, and the targets."""

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

Row = dict[str, Any]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def dist_ms(values_s: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of values in seconds, and how many there were."""
    values = sorted(values_s)
    out = {f"p{q}": quantile(values, q / 100) * 1000 for q in (50, 95, 99)}
    out["max"] = values[-1] * 1000 if values else math.nan
    return {k: round(v, 2) for k, v in out.items()} | {"n": len(values)}


def token_ends(tokens: Sequence[str]) -> list[int]:
    """Character offset at which each token of the answer ends."""
    ends, total = [], 0
    for token in tokens:
        total += len(token)
        ends.append(total)
    return ends


def token_arrivals(
    pieces: Sequence[tuple[float, str]], ends: Sequence[int], t0: float
) -> list[float]:
    """Seconds after `t0` at which each token reached the client: a piece of text received at
    time t delivers every token that ends within the text received so far."""
    arrivals: list[float] = []
    received = 0
    for t, text in pieces:
        received += len(text)
        while len(arrivals) < len(ends) and ends[len(arrivals)] <= received:
            arrivals.append(t - t0)
    return arrivals


def baseline(arrivals: Sequence[Sequence[float]]) -> list[float]:
    """The median arrival time of each token index over many requests (the direct path)."""
    n = min((len(a) for a in arrivals), default=0)
    return [statistics.median(a[i] for a in arrivals) for i in range(n)]


def added_token_latency(arrivals: Sequence[Sequence[float]], base: Sequence[float]) -> list[float]:
    """Each token's arrival minus the direct path's median arrival of the same token index."""
    return [a[i] - base[i] for a in arrivals for i in range(min(len(a), len(base)))]


def added(path: Row, direct: Row) -> dict[str, float]:
    """Latency a path adds over the direct call: the difference of their TTFT percentiles, and
    of token arrivals (`token_added_ms`, when the path has it)."""
    out = {
        f"ttft_{q}": round(path["ttft_ms"][q] - direct["ttft_ms"][q], 2)
        for q in ("p50", "p95", "p99")
    }
    if "token_added_ms" in path:
        out |= {f"token_{q}": path["token_added_ms"][q] for q in ("p50", "p99")}
    return out


# --------------------------------------------------------------------------- targets

# Issue 16's definition of done, on the 2-core machine with llmsim at 50 ms TTFT, 200 tokens/s.
TARGETS = {
    "idle_added_ttft_p50_ms": ("<=", 5.0, "added TTFT p50, 1 stream"),
    "idle_added_ttft_p99_ms": ("<=", 10.0, "added TTFT p99, 1 stream"),
    "cpu_ms_per_request_at_50": ("<=", 5.0, "CPU-ms per request, gateway + workers, 50 streams"),
    "cpu_ms_per_request_at_200": ("<=", 5.0, "CPU-ms per request, gateway + workers, 200 streams"),
    "throughput_vs_direct_at_50": (">=", 0.9, "requests/s as a share of direct, 50 streams"),
    "added_ttft_p50_ms_at_50": ("<=", 25.0, "added TTFT p50, 50 streams"),
    "requests_per_s_at_200": (">=", 200.0, "requests/s, 200 streams"),
    "tokens_per_s_at_200": (">=", 12_800.0, "tokens/s, 200 streams"),
    "errors_at_200": ("<=", 0.0, "errors + mismatches, 200 streams"),
    "errors_at_1000": ("<=", 0.0, "errors + mismatches, 1,000 streams"),
    "mismatches": ("<=", 0.0, "text mismatches, every scenario and path"),
}


def _by_concurrency(scenarios: Sequence[Row]) -> dict[int, Row]:
    return {s["concurrency"]: s for s in scenarios if "tokenbus" in s}


def measured_targets(scenarios: Sequence[Row]) -> dict[str, tuple[float | None, str]]:
    """What the run measured for each target, and at which scenario."""
    by_c = _by_concurrency(scenarios)
    got: dict[str, tuple[float | None, str]] = dict.fromkeys(TARGETS, (None, "not measured"))
    if 1 in by_c:
        added_ms = by_c[1]["added_ms"]["tokenbus"]
        got["idle_added_ttft_p50_ms"] = (added_ms["ttft_p50"], "1 stream")
        got["idle_added_ttft_p99_ms"] = (added_ms["ttft_p99"], "1 stream")
    for c in (50, 200):
        if c in by_c:
            cpu = by_c[c]["tokenbus"].get("tokenbus_cpu_ms_per_request")
            got[f"cpu_ms_per_request_at_{c}"] = (cpu, f"{c} streams")
    if 50 in by_c:
        s = by_c[50]
        direct = s.get("direct", {}).get("requests_per_s")
        share = s["tokenbus"]["requests_per_s"] / direct if direct else None
        got["throughput_vs_direct_at_50"] = (None if share is None else round(share, 3), "50")
        got["added_ttft_p50_ms_at_50"] = (s["added_ms"]["tokenbus"]["ttft_p50"], "50 streams")
    if 200 in by_c:
        row = by_c[200]["tokenbus"]
        got["requests_per_s_at_200"] = (row["requests_per_s"], "200 streams")
        got["tokens_per_s_at_200"] = (row.get("tokens_per_s"), "200 streams")
        got["errors_at_200"] = (float(row["errors"] + row["mismatches"]), "200 streams")
    if 1000 in by_c:
        row = by_c[1000]["tokenbus"]
        got["errors_at_1000"] = (float(row["errors"] + row["mismatches"]), "1000 streams")
    rows = [s[path] for s in scenarios for path in s if isinstance(s[path], dict)
            and "mismatches" in s[path]]  # fmt: skip
    if rows:
        got["mismatches"] = (float(sum(r["mismatches"] for r in rows)), f"{len(rows)} runs")
    return got


def evaluate_targets(scenarios: Sequence[Row]) -> dict[str, Row]:
    """Each target with its limit, the measured value and pass (True), miss (False), or None
    when the run did not measure it (e.g. a --quick run)."""
    out: dict[str, Row] = {}
    for name, (value, at) in measured_targets(scenarios).items():
        op, limit, what = TARGETS[name]
        ok = None
        if value is not None and value == value:
            ok = value <= limit if op == "<=" else value >= limit
        out[name] = {"what": what, "target": f"{op} {limit:g}", "measured": value, "at": at}
        out[name]["pass"] = ok
    return out
