"""GET /v1/models: the routing aliases and every concrete model the tiers serve."""

from typing import Any

from fastapi import APIRouter

from services.gateway.auth import CallerDep
from services.gateway.node import NodeDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(node: NodeDep, _: CallerDep) -> dict[str, Any]:
    names = ["auto", *node.models.tiers, *node.models.concrete_models()]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 0, "owned_by": "tokenbus"} for n in names],
    }
