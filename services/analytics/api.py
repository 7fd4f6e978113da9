"""GET /v1/usage: usage aggregates, scoped by the caller's key; errors in OpenAI's shape."""

from secrets import compare_digest
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.exc import SQLAlchemyError

from contracts import EdgeCode
from services.analytics.aggregate import usage_report
from services.analytics.query import GROUP_KEYS, QueryError, parse_query
from services.analytics.settings import AnalyticsSettings
from services.common.openai_errors import OpenAIError
from services.tenants.store import TenantStore


async def tenant_scope(request: Request) -> str | None:
    """Whose usage the caller may read: None for every tenant, else one tenant's name.

    `TOKENBUS_ADMIN_KEY` and admin keys (`tokenbus keys create --admin`) see every tenant; a
    tenant's key sees its own tenant. In open mode (`TOKENBUS_AUTH_MODE=open`) without an
    admin key, anyone sees everything (development). Tests and deployments can swap the policy
    with `app.dependency_overrides[tenant_scope]`.
    """
    settings: AnalyticsSettings = request.app.state.settings
    if settings.admin_key is None and settings.auth_mode == "open":
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    if settings.admin_key is not None and compare_digest(
        key.encode(), settings.admin_key.get_secret_value().encode()
    ):
        return None
    store: TenantStore = request.app.state.tenant_store
    try:
        principal = await store.principal(key) if key else None
    except (SQLAlchemyError, OSError):
        raise OpenAIError(
            503, "The key store is unavailable; try again.", code=EdgeCode.SERVICE_UNAVAILABLE
        ) from None
    if principal is not None:
        return None if principal.admin else principal.tenant
    raise OpenAIError(
        401,
        "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
        code=EdgeCode.INVALID_API_KEY,
        headers={"www-authenticate": "Bearer"},
    )


TenantScope = Annotated[str | None, Depends(tenant_scope)]
Param = Annotated[str | None, Query()]

router = APIRouter()


@router.get("/v1/usage")
async def get_usage(
    request: Request,
    scope: TenantScope,
    from_: Annotated[str | None, Query(alias="from", description="ISO 8601, inclusive")] = None,
    to: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
    tenant: Param = None,
    model: Param = None,
    route: Param = None,
    status: Annotated[str | None, Query(description="ok | failed | cancelled")] = None,
    group_by: Annotated[
        str | None, Query(description=f"Comma-separated: {', '.join(GROUP_KEYS)}")
    ] = None,
) -> dict[str, Any]:
    """Totals and groups of requests, tokens, cost, TTFT p50/p95 and error rate."""
    try:
        # The raw parameters, so unknown names are refused too (the arguments document them).
        query = parse_query(request.query_params)
    except QueryError as exc:
        raise OpenAIError(400, str(exc), param=exc.param, code=EdgeCode.INVALID_VALUE) from None
    if scope is not None:
        if query.tenant not in (None, scope):
            message = f"This key reads tenant '{scope}' only."
            raise OpenAIError(403, message, param="tenant", code=EdgeCode.PERMISSION_DENIED)
        query = query.for_tenant(scope)
    async with request.app.state.engine.connect() as conn:
        return await usage_report(conn, query)
