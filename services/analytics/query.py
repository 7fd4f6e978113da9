"""The usage API's query: parsed and checked once, so bad input is a 400 before any SQL."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

GROUP_KEYS = ("hour", "day", "model", "route", "tenant", "tier", "status", "api")
STATUSES = ("ok", "failed", "cancelled")
APIS = ("chat", "responses")
FILTERS = ("tenant", "model", "route", "status", "api")


class QueryError(ValueError):
    """A query parameter the API cannot use; `param` names it."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Rows with `start <= started_at < end` matching every filter, grouped by `group_by`."""

    start: datetime | None = None
    end: datetime | None = None
    tenant: str | None = None
    model: str | None = None
    route: str | None = None
    status: str | None = None
    api: str | None = None
    group_by: tuple[str, ...] = ()

    def for_tenant(self, tenant: str) -> "UsageQuery":
        return replace(self, tenant=tenant)


def parse_time(raw: str, param: str) -> datetime:
    """ISO 8601 date or date-time; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise QueryError(
            f"Invalid value for '{param}': {raw!r} is not an ISO 8601 date or date-time "
            "(e.g. 2025-01-31 or 2025-01-31T12:00:00Z).",
            param=param,
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_group_by(raw: str | None) -> tuple[str, ...]:
    keys: list[str] = []
    for part in (raw or "").split(","):
        key = part.strip().lower()
        if not key:
            continue
        if key not in GROUP_KEYS:
            raise QueryError(
                f"Invalid value for 'group_by': {key!r}; expected any of {', '.join(GROUP_KEYS)}"
                " (comma-separated).",
                param="group_by",
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def parse_query(params: Mapping[str, str | None]) -> UsageQuery:
    """Build a `UsageQuery` from raw query parameters (`from`, `to`, filters, `group_by`)."""
    unknown = sorted(set(params) - {"from", "to", "group_by", *FILTERS})
    if unknown:  # a typo (`tennant=`) would otherwise silently widen the answer
        raise QueryError(f"Unknown query parameter '{unknown[0]}'.", param=unknown[0])
    raw_start, raw_end = params.get("from"), params.get("to")
    start = parse_time(raw_start, "from") if raw_start else None
    end = parse_time(raw_end, "to") if raw_end else None
    if start and end and start > end:
        raise QueryError("'from' must not be later than 'to'.", param="from")
    filters = {name: (params.get(name) or "").strip() or None for name in FILTERS}
    # A closed set: a misspelt value would otherwise match nothing and look like no traffic.
    for name, allowed in (("status", STATUSES), ("api", APIS)):
        if filters[name] is not None and filters[name] not in allowed:
            raise QueryError(
                f"Invalid value for '{name}': expected one of {', '.join(allowed)}.", param=name
            )
    return UsageQuery(
        start=start, end=end, group_by=parse_group_by(params.get("group_by")), **filters
    )
