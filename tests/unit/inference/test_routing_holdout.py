"""The complexity router on held-out prompts it was never tuned on (issue 12, item 7).

`routing_holdout.jsonl` follows the label rule of the shared routing dev set: the task asked in
the last user message decides the tier, not its length, language or topic. The cue lists must
not be tuned on these prompts; if this test fails, fix the router with general features.
"""

from collections import Counter
from pathlib import Path

from services.inference.route_eval import evaluate, load_rows
from services.inference.routing import DEFAULT_THRESHOLD

HOLDOUT = Path(__file__).with_name("routing_holdout.jsonl")
MIN_ACCURACY = 0.90


def test_holdout_rows_are_well_formed() -> None:
    rows = load_rows(HOLDOUT)
    ids = [row["id"] for row in rows]
    assert len(rows) >= 70
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    for row in rows:
        assert row["label"] in {"small", "large"}, row["id"]
        assert row["messages"] and row["messages"][-1]["role"] == "user", row["id"]


def test_router_accuracy_on_holdout() -> None:
    report = evaluate(load_rows(HOLDOUT), DEFAULT_THRESHOLD)
    misses = ", ".join(
        f"{m.id} (label {m.label}, score {m.score:+.2f}: {', '.join(m.top_features)})"
        for m in report.misses
    )
    assert report.accuracy >= MIN_ACCURACY, (
        f"holdout accuracy {report.accuracy:.3f} < {MIN_ACCURACY} over {report.n} items; "
        f"misrouted ({len(report.misses)}): {misses}"
    )
