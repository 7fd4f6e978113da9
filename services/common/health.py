"""/healthz, /readyz and /metrics as one FastAPI router, shared by every HTTP service."""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


def health_router(
    registry: CollectorRegistry, readiness: ReadinessCheck, advisory: ReadinessCheck | None = None
) -> APIRouter:
    """Liveness is "the process answers"; readiness asks `readiness` which parts are up.
    `advisory` checks are reported beside them but do not decide readiness."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        checks = await readiness()
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
        if advisory is not None:
            body["advisory"] = await advisory()
        return body

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
