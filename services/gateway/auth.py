"""The caller of an HTTP request, from `Authorization: Bearer <key>` (see callers.py)."""

from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.callers import DEV_TENANT, Caller
from services.gateway.node import NodeDep

__all__ = ["DEV_TENANT", "Caller", "CallerDep", "bearer", "caller_from_request"]

log = structlog.get_logger("gateway")


def bearer(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def unauthorized() -> OpenAIError:
    # Never echo the key back: it may be a real secret pasted in the wrong place.
    return OpenAIError(
        401,
        "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
        code=EdgeCode.INVALID_API_KEY,
        headers={"www-authenticate": "Bearer"},
    )


def store_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The key store is unavailable; try again.",
        code=EdgeCode.SERVICE_UNAVAILABLE,
        headers={"retry-after": "1"},
    )


async def caller_from_request(request: Request, node: NodeDep) -> Caller:
    try:
        caller = await node.auth.caller(bearer(request.headers.get("authorization")))
    except (SQLAlchemyError, OSError) as exc:
        log.error("key_store_unavailable", error=type(exc).__name__)
        raise store_unavailable() from exc
    if caller is None:
        raise unauthorized()
    return caller


CallerDep = Annotated[Caller, Depends(caller_from_request)]
