"""Shared rate limits: exact across nodes, refused requests count for nothing, leases expire."""

import asyncio
import itertools

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.tenants.database import migrated_engine
from services.tenants.limiter import (
    CONCURRENCY,
    DAILY_TOKENS,
    REQUESTS,
    TOKENS,
    RateLimiter,
)
from services.tenants.schema import rate_counters, stream_leases
from services.tenants.store import Limits

T0 = 1_700_000_080.0  # 40 s into a minute (it starts at 1_700_000_040)
_ids = (f"req-{n}" for n in itertools.count())


def rid() -> str:
    return next(_ids)


@pytest.fixture
def limiter(engine: AsyncEngine) -> RateLimiter:
    return RateLimiter(engine, "node-a", lease_s=30)


async def _rows(engine: AsyncEngine, table) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


class TestRequestsPerMinute:
    async def test_the_excess_is_refused_and_refusals_count_for_nothing(
        self, limiter: RateLimiter
    ) -> None:
        limits = Limits(rpm=3)
        admitted = [await limiter.admit("acme", limits, 10, rid(), T0) for _ in range(3)]
        assert [d.requests.remaining for d in admitted if d.requests] == [2, 1, 0]
        for _ in range(5):
            refused = await limiter.admit("acme", limits, 10, rid(), T0 + 1)
            assert refused.ticket is None and refused.refused_by == REQUESTS
            assert refused.requests is not None and refused.requests.remaining == 0
            assert refused.retry_after_s == pytest.approx(19.0)  # to the end of the minute
        # the next minute is a new window; the 5 refusals were not counted in the old one
        assert (await limiter.admit("acme", limits, 10, rid(), T0 + 20)).ticket is not None

    async def test_tenants_are_counted_apart(self, limiter: RateLimiter) -> None:
        limits = Limits(rpm=1)
        assert (await limiter.admit("acme", limits, 1, rid(), T0)).ticket is not None
        assert (await limiter.admit("globex", limits, 1, rid(), T0)).ticket is not None
        assert (await limiter.admit("acme", limits, 1, rid(), T0)).ticket is None

    async def test_two_nodes_at_once_admit_exactly_the_limit(
        self, database_url: str, engine: AsyncEngine
    ) -> None:
        other = await migrated_engine(database_url)  # a second node: its own connections
        try:
            nodes = [RateLimiter(engine, "a"), RateLimiter(other, "b")]
            limits = Limits(rpm=20, concurrency=100)
            decisions = await asyncio.gather(
                *(nodes[i % 2].admit("acme", limits, 5, rid(), T0) for i in range(30))
            )
        finally:
            await other.dispose()
        assert sum(d.ticket is not None for d in decisions) == 20
        assert {d.refused_by for d in decisions if d.ticket is None} == {REQUESTS}

    async def test_no_limits_cost_no_database_round_trip(
        self, limiter: RateLimiter, engine: AsyncEngine
    ) -> None:
        decision = await limiter.admit("acme", Limits(), 10, rid(), T0)
        assert decision.ticket is not None and not decision.ticket.leased
        assert decision.requests is None and decision.tokens is None
        assert await _rows(engine, rate_counters) == 0


class TestTokens:
    async def test_the_estimate_is_charged_and_corrected_by_the_real_usage(
        self, limiter: RateLimiter
    ) -> None:
        limits = Limits(tpm=1000)
        first = await limiter.admit("acme", limits, 600, rid(), T0)
        assert first.ticket is not None and first.tokens is not None
        assert first.tokens.remaining == 400
        refused = await limiter.admit("acme", limits, 600, rid(), T0)
        assert refused.refused_by == TOKENS and refused.tokens is not None
        assert refused.tokens.remaining == 400  # the refused estimate was rolled back
        await limiter.finish(first.ticket, 100)  # it used 100, not 600
        again = await limiter.admit("acme", limits, 600, rid(), T0)
        assert again.ticket is not None and again.tokens is not None
        assert again.tokens.remaining == 300

    async def test_the_daily_budget_refuses_until_the_next_utc_day(
        self, limiter: RateLimiter
    ) -> None:
        limits = Limits(daily_tokens=100)
        assert (await limiter.admit("acme", limits, 80, rid(), T0)).ticket is not None
        refused = await limiter.admit("acme", limits, 30, rid(), T0 + 3600)
        assert refused.refused_by == DAILY_TOKENS
        day_end = (T0 // 86_400 + 1) * 86_400
        assert refused.retry_after_s == pytest.approx(day_end - T0 - 3600)
        assert (await limiter.admit("acme", limits, 30, rid(), day_end + 1)).ticket is not None


class TestConcurrency:
    async def test_slots_are_freed_when_streams_end(self, limiter: RateLimiter) -> None:
        limits = Limits(concurrency=2)
        a = await limiter.admit("acme", limits, 1, rid(), T0)
        b = await limiter.admit("acme", limits, 1, rid(), T0)
        refused = await limiter.admit("acme", limits, 1, rid(), T0)
        assert refused.refused_by == CONCURRENCY and refused.retry_after_s == 1.0
        assert a.ticket is not None and b.ticket is not None and limiter.held == 2
        await limiter.finish(a.ticket, None)
        assert limiter.held == 1
        assert (await limiter.admit("acme", limits, 1, rid(), T0)).ticket is not None

    async def test_a_dead_nodes_slots_expire_and_a_live_node_keeps_its_own(
        self, engine: AsyncEngine
    ) -> None:
        limits = Limits(concurrency=2)
        dead, live = RateLimiter(engine, "dead", lease_s=30), RateLimiter(engine, "live", 30)
        assert (await dead.admit("acme", limits, 1, rid(), T0)).ticket is not None
        assert (await live.admit("acme", limits, 1, rid(), T0)).ticket is not None
        assert (await live.admit("acme", limits, 1, rid(), T0 + 20)).ticket is None
        await live.renew(now=T0 + 20)  # the live node renews; the dead one cannot
        assert (await live.admit("acme", limits, 1, rid(), T0 + 31)).ticket is not None
        assert (await live.admit("acme", limits, 1, rid(), T0 + 31)).ticket is None
        await live.renew(now=T0 + 31)
        assert await _rows(engine, stream_leases) == 2  # the dead node's lease is gone

    async def test_a_slot_never_released_stops_being_renewed_after_max_hold(
        self, engine: AsyncEngine
    ) -> None:
        limiter = RateLimiter(engine, "node", lease_s=30, max_hold_s=0)
        limits = Limits(concurrency=1)
        assert (await limiter.admit("acme", limits, 1, rid(), T0)).ticket is not None
        await limiter.renew(now=T0 + 20)
        assert limiter.held == 0
        assert (await limiter.admit("acme", limits, 1, rid(), T0 + 31)).ticket is not None

    async def test_renewal_drops_windows_that_are_over(
        self, limiter: RateLimiter, engine: AsyncEngine
    ) -> None:
        await limiter.admit("acme", Limits(rpm=5, tpm=100), 1, rid(), T0)
        assert await _rows(engine, rate_counters) == 3  # admissions, requests, tokens
        await limiter.renew(now=T0 + 180)
        assert await _rows(engine, rate_counters) == 1  # the admissions row stays
