"""WebSocket client helpers for e2e tests (the `websockets` library, as browsers' peers)."""

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection


def ws_url(base: str) -> str:
    return "ws" + base.removeprefix("http") + "/v1/ws"


async def recv(conn: ClientConnection, within: float = 30.0) -> dict[str, Any]:
    """The next frame that is not a heartbeat."""
    async with asyncio.timeout(within):
        while (frame := json.loads(await conn.recv()))["type"] == "heartbeat":
            pass
    return frame  # type: ignore[no-any-return]


async def send(conn: ClientConnection, **message: Any) -> None:
    await conn.send(json.dumps(message))
