"""Publishes ChatRequested, control events and room events (topics from the registry)."""

from faststream.kafka import KafkaBroker

from contracts import (
    CancelRequested,
    ChatRequested,
    ClientAttached,
    ClientDetached,
    GatewayAlive,
    Topics,
)
from contracts.rooms import RoomEvent


class RequestPublisher:
    """The gateway's only writes to Kafka; `node` is this process's id in control events."""

    def __init__(self, broker: KafkaBroker, topics: Topics, node: str = "") -> None:
        self._broker = broker
        self.node = node or None
        self._requests = broker.publisher(
            topics.requests.name, title="chat_requested", schema=ChatRequested
        )
        self._control = broker.publisher(
            topics.control.name, title="cancel_requested", schema=CancelRequested
        )
        self._rooms = broker.publisher(
            topics.rooms.name,
            title="room_event",
            schema=RoomEvent,
            description="Presence, typing, messages and answers of rooms, read by every gateway",
        )

    async def chat(self, request: ChatRequested) -> None:
        await self._requests.publish(request, key=request.request_id.encode())

    async def cancel(self, request_id: str, reason: str) -> None:
        command = CancelRequested(request_id=request_id, reason=reason)
        await self._control.publish(command, key=request_id.encode())

    async def attached(self, request_id: str) -> None:
        attached = ClientAttached(request_id=request_id, node=self.node)
        await self._control.publish(attached, key=request_id.encode())

    async def detached(self, request_id: str, grace_s: float) -> None:
        detached = ClientDetached(request_id=request_id, grace_s=grace_s, node=self.node)
        await self._control.publish(detached, key=request_id.encode())

    async def alive(self, grace_s: float) -> None:
        assert self.node is not None, "a node without an id cannot say it is alive"
        await self._control.publish(
            GatewayAlive(request_id=self.node, grace_s=grace_s), key=self.node.encode()
        )

    async def room(self, event: RoomEvent) -> None:
        await self._rooms.publish(event, key=event.room_id.encode())
