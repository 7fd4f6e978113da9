"""A room member over a real WebSocket (`websockets`), for the rooms e2e tests: it reads every
frame in the background and lets a test wait for the frames it expects."""

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fakes import eventually

Frame = dict[str, Any]


async def new_room(base_url: str, key: str) -> str:
    """A conversation to use as a room."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{base_url}/v1/conversations", json={}, headers={"authorization": f"Bearer {key}"}
        )
    return str(response.raise_for_status().json()["id"])


class Member:
    def __init__(self, base_url: str, room: str, user: str, key: str) -> None:
        self.url = base_url.replace("http://", "ws://") + f"/v1/rooms/{room}"
        self.room, self.user, self.key = room, user, key
        self.frames: list[Frame] = []
        self.state: Frame = {}
        self.closed: int | None = None  # the close code, once closed
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        self._ws = await connect(self.url, additional_headers=headers, max_size=None)
        self._reader = asyncio.create_task(self._read())

    async def join(self, **extra: Any) -> Frame:
        """Connect, join, and return the `room_state`."""
        self.frames.clear()
        await self.connect()
        await self.send({"type": "join", "user": self.user, **extra})
        self.state = await self.first(lambda f: f["type"] in ("room_state", "error"))
        return self.state

    async def send(self, message: Frame | str) -> None:
        assert self._ws is not None
        await self._ws.send(message if isinstance(message, str) else json.dumps(message))

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                self.frames.append(json.loads(raw))
        except ConnectionClosed:
            pass
        self.closed = self._ws.close_code if self._ws.close_code is not None else 1006

    async def first(self, match: Callable[[Frame], bool], within: float = 20) -> Frame:
        """The first frame (of this connection) that `match`es, waiting for it."""
        found: list[Frame] = []

        async def seen() -> bool:
            found[:] = [f for f in self.frames if match(f)]
            return bool(found)

        await eventually(seen, within=within)
        return found[0]

    def of(self, kind: str, **fields: Any) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f["type"] == kind and all(f.get(k) == v for k, v in fields.items())
        ]

    async def answer(self, request_id: str, within: float = 30) -> tuple[str, list[Frame]]:
        """The answer's events, once its terminal one is here: (text, events)."""
        await self.first(
            lambda f: f["type"] in ("completed", "failed") and f.get("request_id") == request_id,
            within,
        )
        events = [
            f
            for f in self.frames
            if f.get("request_id") == request_id
            and f["type"] in ("started", "delta", "completed", "failed")
        ]
        return "".join(f.get("content", "") for f in events if f["type"] == "delta"), events

    async def cut(self) -> None:
        """Drop the connection without a `leave`, as a lost network would."""
        if self._ws is not None:
            self._ws.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def leave(self) -> None:
        if self._ws is not None and self.closed is None:
            with contextlib.suppress(ConnectionClosed):
                await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.CancelledError):
                await self._ws.wait_closed()
        if self._reader is not None:
            await self._reader
