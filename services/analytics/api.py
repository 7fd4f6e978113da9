"""GET /v1/usage: usage aggregates, scoped by the caller's key; errors in OpenAI's shape."""

from secrets import compare_digest
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.analytics.aggregate import usage_report
from services.analytics.query import GROUP_KEYS, QueryError, parse_query
from services.analytics.settings import AnalyticsSettings
from services.tenants.store import TenantStore


class ApiError(Exception):
    """An error the caller sees as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "api_error"
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        headers = {"www-authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


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
        raise ApiError(503, "The key store is unavailable; try again.") from None
    if principal is not None:
        return None if principal.admin else principal.tenant
    raise ApiError(
        401,
        "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
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
        raise ApiError(400, str(exc), param=exc.param, code="invalid_value") from None
    if scope is not None:
        if query.tenant not in (None, scope):
            raise ApiError(403, f"This key reads tenant '{scope}' only.", param="tenant")
        query = query.for_tenant(scope)
    async with request.app.state.engine.connect() as conn:
        return await usage_report(conn, query)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return ApiError(exc.status_code, str(exc.detail)).response()
