"""WS /v1/ws: chats, resumes and cancels as JSON messages; many requests on one socket.

This module authenticates the handshake; `services.gateway.ws_session` runs the socket and
`services.gateway.ws_protocol` defines its messages (docs/websocket.md describes them).
"""

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from services.gateway.errors import ApiError
from services.gateway.node import GatewayNode
from services.gateway.ws_session import Session, tenant_for_key

router = APIRouter()

BEARER = "bearer."  # Sec-WebSocket-Protocol: bearer.<key>, for browsers (they cannot set headers)


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Keys: `Sec-WebSocket-Protocol: bearer.<key>` (echoed back), `Authorization: Bearer`,
    or a first `auth` message; none needed in development mode (no keys configured)."""
    node: GatewayNode = websocket.app.state.node
    subprotocol = next((p for p in websocket.scope["subprotocols"] if p.startswith(BEARER)), None)
    key = subprotocol[len(BEARER) :] if subprotocol else _header_key(websocket)
    tenant = tenant_for_key(node.settings.api_keys, key)
    if tenant is None and key is not None:
        await _deny(websocket)  # a wrong key in the handshake: 401, as on HTTP
        return
    await websocket.accept(subprotocol=subprotocol)
    await Session(websocket, node, tenant).run()


def _header_key(websocket: WebSocket) -> str | None:
    scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


async def _deny(websocket: WebSocket) -> None:
    # Never echo the key back: it may be a real secret pasted in the wrong place.
    err = ApiError(401, "Incorrect API key.", code="invalid_api_key")
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(err.body(), status_code=401))
    else:
        await websocket.close(code=1008)
