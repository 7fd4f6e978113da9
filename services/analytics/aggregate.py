"""Usage aggregates in SQL: totals and groups, with TTFT percentiles the same on every backend."""

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.analytics.query import FILTERS, UsageQuery
from services.analytics.store import usage

Key = tuple[Any, ...]
PERCENTILES = (0.5, 0.95)

_COLUMNS: dict[str, ColumnElement[Any]] = {
    "tenant": usage.c.tenant_id,
    "model": usage.c.model,
    "route": usage.c.route,
    "tier": usage.c.tier,
    "status": usage.c.status,
    "api": usage.c.api,
}


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks: PostgreSQL's `percentile_cont`."""
    if not ordered:
        return None
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _bucket(dialect: str, unit: str) -> ColumnElement[Any]:
    """`started_at` truncated to its UTC hour or day, as an ISO 8601 string."""
    if dialect == "postgresql":
        fmt = 'YYYY-MM-DD"T"HH24:00:00"Z"' if unit == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", usage.c.started_at), fmt)
    # SQLite stores naive UTC text (common `UtcDateTime`), which strftime reads as it is.
    return func.strftime("%Y-%m-%dT%H:00:00Z" if unit == "hour" else "%Y-%m-%d", usage.c.started_at)


def _group_exprs(query: UsageQuery, dialect: str) -> list[ColumnElement[Any]]:
    return [
        _bucket(dialect, key) if key in ("hour", "day") else _COLUMNS[key] for key in query.group_by
    ]


def _where(stmt: Select[Any], query: UsageQuery) -> Select[Any]:
    if query.start is not None:
        stmt = stmt.where(usage.c.started_at >= query.start)
    if query.end is not None:
        stmt = stmt.where(usage.c.started_at < query.end)
    for name in FILTERS:
        value = getattr(query, name)
        if value is not None:
            stmt = stmt.where(_COLUMNS[name] == value)
    return stmt


def _sums(groups: list[ColumnElement[Any]], dialect: str) -> list[ColumnElement[Any]]:
    sums: list[ColumnElement[Any]] = [
        func.count(),
        func.coalesce(func.sum(usage.c.prompt_tokens), 0),
        func.coalesce(func.sum(usage.c.completion_tokens), 0),
        func.coalesce(func.sum(usage.c.cost_usd), 0.0),
        func.coalesce(func.sum(case((usage.c.status == "failed", 1), else_=0)), 0),
    ]
    if dialect == "postgresql":  # percentiles in SQL where the database has them
        sums += [func.percentile_cont(q).within_group(usage.c.ttft_ms) for q in PERCENTILES]
    return [*groups, *sums]


def _metrics(row: Sequence[Any], ttfts: Sequence[float | None]) -> dict[str, Any]:
    requests, prompt, completion, cost, failed = row
    return {
        "requests": int(requests),
        "prompt_tokens": int(prompt),
        "completion_tokens": int(completion),
        "cost_usd": float(cost),
        "ttft_ms_p50": ttfts[0],
        "ttft_ms_p95": ttfts[1],
        "error_rate": int(failed) / int(requests) if requests else 0.0,
    }


async def _ttfts_in_python(
    conn: AsyncConnection, query: UsageQuery, groups: list[ColumnElement[Any]]
) -> dict[Key, list[float | None]]:
    """Percentiles per group key from the rows' TTFTs (SQLite has no percentile function)."""
    stmt = _where(select(*groups, usage.c.ttft_ms), query).where(usage.c.ttft_ms.is_not(None))
    values: dict[Key, list[float]] = defaultdict(list)
    result = await conn.stream(stmt.order_by(usage.c.ttft_ms))
    async for row in result:
        values[tuple(row[:-1])].append(row[-1])
    return {key: [percentile(v, q) for q in PERCENTILES] for key, v in values.items()}


async def _aggregate(
    conn: AsyncConnection, query: UsageQuery, groups: list[ColumnElement[Any]]
) -> list[tuple[Key, dict[str, Any]]]:
    dialect = conn.dialect.name
    stmt = _where(select(*_sums(groups, dialect)), query)
    if groups:
        stmt = stmt.group_by(*groups).order_by(*groups)
    rows = (await conn.execute(stmt)).all()
    width = len(groups)
    if dialect == "postgresql":
        return [(tuple(r[:width]), _metrics(r[width : width + 5], r[width + 5 :])) for r in rows]
    ttfts = await _ttfts_in_python(conn, query, groups)
    none = [None] * len(PERCENTILES)
    return [
        (tuple(r[:width]), _metrics(r[width:], ttfts.get(tuple(r[:width]), none))) for r in rows
    ]


async def usage_report(conn: AsyncConnection, query: UsageQuery) -> dict[str, Any]:
    """`{"totals": {...}, "groups": [{"key": {...}, ...}]}` for `query`."""
    [(_, totals)] = await _aggregate(conn, query, [])
    groups = []
    if query.group_by:
        for key, metrics in await _aggregate(conn, query, _group_exprs(query, conn.dialect.name)):
            groups.append({"key": dict(zip(query.group_by, key, strict=True)), **metrics})
    return {"totals": totals, "groups": groups}
