"""WS /v1/rooms/{room_id}: several members, one conversation, one AI answer streamed to all.

The handshake authenticates as `/v1/ws` does; `services.gateway.rooms` runs the room
(docs/rooms.md).
"""

from fastapi import APIRouter, WebSocket

from services.gateway.node import GatewayNode
from services.gateway.rooms.session import RoomSession
from services.gateway.routes.ws import handshake

router = APIRouter()


@router.websocket("/v1/rooms/{room_id}")
async def room_endpoint(websocket: WebSocket, room_id: str) -> None:
    node: GatewayNode = websocket.app.state.node
    accepted, caller = await handshake(websocket, node, require_key=True)
    if not accepted or caller is None:
        return
    hub = websocket.app.state.rooms
    connections = node.metrics.connections if node.metrics is not None else None
    if connections is not None:
        connections.inc()
    try:
        await RoomSession(websocket, node, hub, caller, room_id).run()
    finally:
        if connections is not None:
            connections.dec()
