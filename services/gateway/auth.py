"""Tenant from the `Authorization: Bearer` key; open development mode when no keys are set."""

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.errors import ApiError
from services.gateway.node import NodeDep

DEV_TENANT = "dev"


def tenant_from_request(request: Request, node: NodeDep) -> str:
    keys = node.settings.api_keys
    if not keys:
        return DEV_TENANT
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    tenant = keys.get(key.strip()) if scheme.lower() == "bearer" else None
    if tenant is None:
        # Never echo the key back: it may be a real secret pasted in the wrong place.
        raise ApiError(
            401,
            "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
            headers={"www-authenticate": "Bearer"},
        )
    return tenant


TenantDep = Annotated[str, Depends(tenant_from_request)]
