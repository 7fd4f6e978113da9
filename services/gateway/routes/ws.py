"""WS /v1/ws: chats, resumes and cancels as JSON messages; many requests on one socket.

This module authenticates the handshake; `services.gateway.ws_session` runs the socket and
`services.gateway.ws_protocol` defines its messages (docs/websocket.md describes them).
"""

from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError

from services.common.openai_errors import OpenAIError
from services.gateway.auth import bearer, store_unavailable, unauthorized
from services.gateway.callers import Caller
from services.gateway.node import GatewayNode
from services.gateway.ws_session import Session

router = APIRouter()

BEARER = "bearer."  # Sec-WebSocket-Protocol: bearer.<key>, for browsers (they cannot set headers)


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    node: GatewayNode = websocket.app.state.node
    accepted, caller = await handshake(websocket, node)
    if not accepted:
        return
    connections = node.metrics.connections if node.metrics is not None else None
    if connections is not None:
        connections.inc()
    try:
        await Session(websocket, node, caller).run()
    finally:
        if connections is not None:
            connections.dec()


async def handshake(
    websocket: WebSocket, node: GatewayNode, *, require_key: bool = False
) -> tuple[bool, Caller | None]:
    """Keys: `Sec-WebSocket-Protocol: bearer.<key>` (echoed back), `Authorization: Bearer`,
    or (unless `require_key`) a first `auth` message; never the query string; none in open
    mode. Whether the socket was accepted, and its caller (None: not known yet)."""
    subprotocol = next((p for p in websocket.scope["subprotocols"] if p.startswith(BEARER)), None)
    header = websocket.headers.get("authorization")
    key = subprotocol[len(BEARER) :] if subprotocol else bearer(header)
    try:
        caller = await node.auth.caller(key)
    except (SQLAlchemyError, OSError):
        await _deny(websocket, store_unavailable())
        return False, None
    if caller is None and (key is not None or require_key):
        # A wrong key in the handshake: 401, as on HTTP. Never echo the key back.
        await _deny(websocket, unauthorized())
        return False, None
    await websocket.accept(subprotocol=subprotocol)
    return True, caller


async def _deny(websocket: WebSocket, err: OpenAIError) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(err.response())
    else:
        await websocket.close(code=1008 if err.status == 401 else 1013)
