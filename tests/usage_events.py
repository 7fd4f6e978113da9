"""Generated UsageRecorded events and the totals a correct analytics must report for them."""

import random
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import BackendTry, ErrorCode, TokenUsage, UsageRecorded

TENANTS = ("acme", "globex", "initech")
MODELS = (("small", "llmsim-small"), ("large", "llmsim-large"))
STATUSES = ("ok", "ok", "ok", "failed", "cancelled")
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def usage_event(n: int, rng: random.Random, start: datetime = T0) -> UsageRecorded:
    """Event number `n`: a spread of tenants, tiers, routes, statuses and times (2 per minute).

    Costs are multiples of 2**-20 USD, which doubles add exactly in any order, so a sum in
    SQL can be compared with a sum in Python using ==.
    """
    tier, model = rng.choice(MODELS)
    status = rng.choice(STATUSES)
    prompt, completion = rng.randint(1, 400), rng.randint(0, 600)
    started = start + timedelta(seconds=30 * n)
    return UsageRecorded(
        request_id=f"chatcmpl-{n:08d}",
        attempt=f"a{n:04x}",
        tenant_id=rng.choice(TENANTS),
        route=rng.choice(("explicit", "score")),
        route_score=round(rng.random(), 3),
        route_features=("code", "math"),
        tier=tier,
        backend=model,
        model=model,
        usage=TokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        ),
        cost_usd=rng.randint(0, 5000) / 2**20,
        ttft_ms=None if status == "failed" else round(rng.uniform(5, 500), 3),
        duration_ms=rng.uniform(10, 5000),
        finish_reason={"ok": "stop", "cancelled": "cancelled"}.get(status),
        status=status,  # type: ignore[arg-type]
        error_code=ErrorCode.BACKEND_ERROR if status == "failed" else None,
        tries=(BackendTry(backend=model, model=model, tier=tier, outcome="ok", duration_ms=3.5),),
        started_at=started,
        finished_at=started + timedelta(seconds=2),
    )


def usage_events(count: int, seed: int = 7, start: datetime = T0) -> list[UsageRecorded]:
    rng = random.Random(seed)
    return [usage_event(n, rng, start) for n in range(count)]


def expected_totals(events: Iterable[UsageRecorded]) -> dict[str, Any]:
    """requests, token and cost sums, and failures, as the API must report them."""
    events = list(events)
    return {
        "requests": len(events),
        "prompt_tokens": sum(e.usage.prompt_tokens for e in events),
        "completion_tokens": sum(e.usage.completion_tokens for e in events),
        "cost_usd": sum(e.cost_usd for e in events),
        "failed": sum(e.status == "failed" for e in events),
    }


def expected_counts(events: Iterable[UsageRecorded], field: str) -> Counter[str]:
    """Requests per value of `field` (tenant_id, model, route, status, tier)."""
    return Counter(getattr(e, field) for e in events)
