"""Per-tenant rate limits shared by every gateway node through the SQL database.

Requests and tokens per minute count in fixed one-minute windows, daily tokens in a UTC-day
window: upserted counters (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`). An admission is
one transaction that adds itself to each limited counter and rolls back if any goes over, so
refused requests count for nothing. Concurrent streams are lease rows renewed by their node:
a node that dies frees its slots when its leases expire. A per-tenant `admissions` row is
upserted first, so that a tenant's admissions run one at a time on every backend (a row lock
on PostgreSQL, the write lock on SQLite) and the lease count is exact.
"""

import secrets
import time
from dataclasses import dataclass

import structlog
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.tenants.schema import rate_counters, stream_leases
from services.tenants.store import Limits, dialect_insert

log = structlog.get_logger("limits")

MINUTE_S = 60
DAY_S = 86_400
ADMISSIONS, REQUESTS, TOKENS, DAILY_TOKENS, CONCURRENCY = (
    "admissions",
    "requests",
    "tokens",
    "daily_tokens",
    "concurrency",
)
_NEVER_MS = 2**62


@dataclass(frozen=True, slots=True)
class Quota:
    """One limit as the client sees it in `x-ratelimit-*` headers."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Ticket:
    """What an admission counted, to correct and release when its stream ends."""

    tenant: str
    request_id: str
    estimate: int
    minute: int
    day: int
    token_kinds: tuple[str, ...]
    leased: bool


@dataclass(frozen=True, slots=True)
class Decision:
    ticket: Ticket | None  # None: refused
    refused_by: str | None = None
    retry_after_s: float = 0.0
    requests: Quota | None = None
    tokens: Quota | None = None


class RateLimiter:
    """Admits or refuses a tenant's new stream; one transaction per admission."""

    def __init__(
        self,
        engine: AsyncEngine,
        instance: str,
        lease_s: float = 60.0,
        max_hold_s: float = 3600.0,
    ) -> None:
        self.engine = engine
        # Tells a restarted node's leases from its predecessor's, for whoever reads the table.
        self.node = f"{instance}-{secrets.token_hex(4)}"
        self.lease_s, self.max_hold_s = lease_s, max_hold_s
        self._insert = dialect_insert(engine)
        self._held: dict[str, float] = {}  # request id -> when admitted (monotonic)

    @property
    def held(self) -> int:
        return len(self._held)

    async def admit(
        self, tenant: str, limits: Limits, estimate: int, request_id: str, now: float | None = None
    ) -> Decision:
        now = time.time() if now is None else now
        if not limits.any():  # nothing to count: no database round trip
            return Decision(Ticket(tenant, request_id, estimate, *_windows(now), (), False))
        async with self.engine.connect() as conn:
            trans = await conn.begin()
            try:
                decision = await self._admit(conn, tenant, limits, estimate, request_id, now)
            except BaseException:
                await trans.rollback()
                raise
            if decision.ticket is None:
                await trans.rollback()
            else:
                await trans.commit()
        if decision.ticket is not None and decision.ticket.leased:
            self._held[request_id] = time.monotonic()
        return decision

    async def _admit(
        self,
        conn: AsyncConnection,
        tenant: str,
        limits: Limits,
        estimate: int,
        request_id: str,
        now: float,
    ) -> Decision:
        minute, day = _windows(now)
        rows = _counter_rows(limits, estimate, minute, day)
        counted = await self._count(conn, tenant, rows)
        refused = _over(limits, counted)
        leased = False
        if refused is None and limits.concurrency is not None:
            now_ms = int(now * 1000)
            active = await self._active_streams(conn, tenant, now_ms)
            if active >= limits.concurrency:
                refused = CONCURRENCY
            else:
                await conn.execute(
                    stream_leases.insert().values(
                        request_id=request_id,
                        tenant=tenant,
                        node=self.node,
                        expires_at_ms=now_ms + int(self.lease_s * 1000),
                    )
                )
                leased = True
        admitted = refused is None
        requests = _quota(limits.rpm, counted.get(REQUESTS), 0 if admitted else 1, minute, now)
        tokens = _quota(limits.tpm, counted.get(TOKENS), 0 if admitted else estimate, minute, now)
        if not admitted:
            retry = {DAILY_TOKENS: day + DAY_S - now, CONCURRENCY: 1.0}.get(
                refused or "", minute + MINUTE_S - now
            )
            return Decision(None, refused, max(retry, 0.0), requests, tokens)
        kinds = tuple(kind for kind, *_ in rows if kind in (TOKENS, DAILY_TOKENS))
        ticket = Ticket(tenant, request_id, estimate, minute, day, kinds, leased)
        return Decision(ticket, None, 0.0, requests, tokens)

    async def _count(
        self, conn: AsyncConnection, tenant: str, rows: list[tuple[str, int, int, int]]
    ) -> dict[str, int]:
        """Add each row's increment to its counter; the counters' new values."""
        values = [
            {"tenant": tenant, "kind": k, "window_start": w, "value": v, "expires_at_ms": e}
            for k, w, v, e in rows
        ]
        statement = self._insert(rate_counters).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=["tenant", "kind", "window_start"],
            set_={"value": rate_counters.c.value + statement.excluded.value},
        ).returning(rate_counters.c.kind, rate_counters.c.value)
        return {row.kind: row.value for row in await conn.execute(statement)}

    async def _active_streams(self, conn: AsyncConnection, tenant: str, now_ms: int) -> int:
        query = select(func.count()).where(
            stream_leases.c.tenant == tenant, stream_leases.c.expires_at_ms > now_ms
        )
        return int((await conn.execute(query)).scalar_one())

    async def finish(self, ticket: Ticket, actual_tokens: int | None) -> None:
        """The stream ended: correct the token estimate by the real usage, free the slot."""
        delta = 0 if actual_tokens is None else actual_tokens - ticket.estimate
        correct = bool(delta and ticket.token_kinds)
        if not correct and not ticket.leased:
            return
        self._held.pop(ticket.request_id, None)
        async with self.engine.begin() as conn:
            if correct:
                windows = [
                    and_(rate_counters.c.kind == kind, rate_counters.c.window_start == start)
                    for kind, start in (
                        (TOKENS, ticket.minute),
                        (DAILY_TOKENS, ticket.day),
                    )
                    if kind in ticket.token_kinds
                ]
                await conn.execute(
                    update(rate_counters)
                    .where(rate_counters.c.tenant == ticket.tenant, or_(*windows))
                    .values(value=rate_counters.c.value + delta)
                )
            if ticket.leased:
                await conn.execute(
                    delete(stream_leases).where(stream_leases.c.request_id == ticket.request_id)
                )

    async def renew(self, now: float | None = None) -> None:
        """Renew the leases of this node's open streams; drop expired leases and windows (of
        any node). A stream that held its slot longer than `max_hold_s` is taken for lost (a
        release that never came) and no longer renewed, so not even a bug leaks a slot."""
        now_ms = int((time.time() if now is None else now) * 1000)
        oldest = time.monotonic() - self.max_hold_s
        for request_id in [r for r, t in self._held.items() if t < oldest]:
            del self._held[request_id]
        held = list(self._held)
        async with self.engine.begin() as conn:
            for i in range(0, len(held), 500):
                await conn.execute(
                    update(stream_leases)
                    .where(stream_leases.c.request_id.in_(held[i : i + 500]))
                    .values(expires_at_ms=now_ms + int(self.lease_s * 1000))
                )
            await conn.execute(delete(stream_leases).where(stream_leases.c.expires_at_ms < now_ms))
            await conn.execute(delete(rate_counters).where(rate_counters.c.expires_at_ms < now_ms))


def _windows(now: float) -> tuple[int, int]:
    return int(now // MINUTE_S) * MINUTE_S, int(now // DAY_S) * DAY_S


def _counter_rows(
    limits: Limits, estimate: int, minute: int, day: int
) -> list[tuple[str, int, int, int]]:
    """(kind, window start, increment, expiry ms) of each counter this admission touches; the
    `admissions` row first, so it is the one a tenant's concurrent admissions queue on."""
    minute_expiry, day_expiry = (minute + 2 * MINUTE_S) * 1000, (day + 2 * DAY_S) * 1000
    rows = [(ADMISSIONS, 0, 1, _NEVER_MS)]
    if limits.rpm is not None:
        rows.append((REQUESTS, minute, 1, minute_expiry))
    if limits.tpm is not None:
        rows.append((TOKENS, minute, estimate, minute_expiry))
    if limits.daily_tokens is not None:
        rows.append((DAILY_TOKENS, day, estimate, day_expiry))
    return rows


def _over(limits: Limits, counted: dict[str, int]) -> str | None:
    for kind, limit in ((REQUESTS, limits.rpm), (TOKENS, limits.tpm)):
        if limit is not None and counted[kind] > limit:
            return kind
    if limits.daily_tokens is not None and counted[DAILY_TOKENS] > limits.daily_tokens:
        return DAILY_TOKENS
    return None


def _quota(
    limit: int | None, value: int | None, undo: int, minute: int, now: float
) -> Quota | None:
    if limit is None or value is None:
        return None
    return Quota(limit, max(limit - (value - undo), 0), max(minute + MINUTE_S - now, 0.0))
