"""Room events on `llm.rooms`, keyed by room id: one ordered log per room that every gateway
node reads, so members on any node see the same presence, typing, messages and answers in
the same order. Each node rebuilds a room's state by applying these events in log order
(`services.gateway.rooms.state`); the AI's tokens stay on `llm.tokens`."""

from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from contracts.base import utcnow


class _RoomEventBase(BaseModel):
    # As `contracts.base.Event`, with a room instead of a request.
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str = Field(description="Event type name; the discriminator of the union")
    schema_version: int = Field(default=1, ge=1, description="Bumped on a breaking change")
    event_id: UUID = Field(default_factory=uuid4, description="Lets a node find its own event")
    room_id: str = Field(min_length=1, max_length=128, description="The room (its conversation)")
    tenant: str = Field(min_length=1, description="The tenant the room belongs to")
    member: str = Field(min_length=1, max_length=64, description="The member it is about")
    user: str = Field(default="", max_length=64, description="The member's display name")
    ts: AwareDatetime = Field(default_factory=utcnow, description="When it was made (UTC)")


class MemberJoined(_RoomEventBase):
    """A member joined (or came back, on any node, before its presence ran out)."""

    type: Literal["joined"] = "joined"


class MemberAlive(_RoomEventBase):
    """The member's node still holds its socket (sent every `room_alive_s`)."""

    type: Literal["alive"] = "alive"


class MemberLeft(_RoomEventBase):
    """The member left, or its presence ran out (`timeout`: no `alive` for a while)."""

    type: Literal["left"] = "left"
    reason: Literal["leave", "timeout"] = "leave"


class MemberTyping(_RoomEventBase):
    type: Literal["typing"] = "typing"
    active: bool


class MemberSaid(_RoomEventBase):
    """A message to the room (the AI does not answer it, but sees it in later answers)."""

    type: Literal["said"] = "said"
    message_id: str = Field(description="The conversation item it was kept as")
    content: str


class MemberAsked(_RoomEventBase):
    """A message the AI answers: the room is answering `request_id` until `answered`."""

    type: Literal["asked"] = "asked"
    message_id: str = Field(description="Unique in the room; the conversation keeps the turn")
    content: str
    request_id: str = Field(description="The answer's request, streamed on `llm.tokens`")


class Answered(_RoomEventBase):
    """The answer to `request_id` ended (any node that streamed it may say so; the first
    one counts). `member` is the asker."""

    type: Literal["answered"] = "answered"
    request_id: str
    message_id: str
    status: str = Field(description="completed | incomplete | cancelled | failed")
    content: str = Field(description="The answer's text (empty when there is none)")


RoomEvent = Annotated[
    MemberJoined | MemberAlive | MemberLeft | MemberTyping | MemberSaid | MemberAsked | Answered,
    Field(discriminator="type"),
]
ROOM_EVENT: TypeAdapter[RoomEvent] = TypeAdapter(RoomEvent)

__all__ = [
    "ROOM_EVENT",
    "Answered",
    "MemberAlive",
    "MemberAsked",
    "MemberJoined",
    "MemberLeft",
    "MemberSaid",
    "MemberTyping",
    "RoomEvent",
]
