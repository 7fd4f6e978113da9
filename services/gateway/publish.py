"""Publishes ChatRequested, control events and room events (topics from the registry)."""

from faststream.kafka import KafkaBroker

from contracts import CancelRequested, ChatRequested, ClientAttached, ClientDetached, Topics
from contracts.rooms import RoomEvent


class RequestPublisher:
    """The gateway's only writes to Kafka."""

    def __init__(self, broker: KafkaBroker, topics: Topics) -> None:
        self._broker = broker
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
        await self._control.publish(ClientAttached(request_id=request_id), key=request_id.encode())

    async def detached(self, request_id: str, grace_s: float) -> None:
        await self._control.publish(
            ClientDetached(request_id=request_id, grace_s=grace_s), key=request_id.encode()
        )

    async def room(self, event: RoomEvent) -> None:
        await self._rooms.publish(event, key=event.room_id.encode())
