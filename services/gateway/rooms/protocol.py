"""The JSON messages of `WS /v1/rooms/{room_id}` (docs/rooms.md): client messages parsed
without raising, and the frames a room event becomes. Pure functions and models, no I/O."""

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr, TypeAdapter, field_validator

from contracts.rooms import (
    Answered,
    MemberAsked,
    MemberJoined,
    MemberLeft,
    MemberSaid,
    MemberTyping,
    RoomEvent,
)
from services.gateway.openai_wire import ChatCompletionRequest
from services.gateway.ws_protocol import MessageBase, WithBody, WsError, parse_message, reply

TYPING_TTL_S = 5  # a client drops a `typing` this long after the last refresh
_NAME = re.compile(r"[^:\x00-\x1f\x7f]{1,40}")
ASSISTANT = "assistant"


class JoinMessage(MessageBase):
    type: Literal["join"]
    user: StrictStr = Field(description="Display name: 1-40 characters, no ':' or controls")
    member: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    since: StrictInt | None = Field(default=None, ge=-1, description="Last `pos` received")
    last_seq: StrictInt = Field(default=-1, ge=-1, description="Last seq of the answer")

    @field_validator("user")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        value = value.strip()
        if not _NAME.fullmatch(value) or value.lower() == ASSISTANT:
            raise ValueError("1 to 40 characters, no ':' or control characters, not 'assistant'")
        return value


class SayMessage(MessageBase):
    type: Literal["say"]
    content: StrictStr = Field(min_length=1)


class AskMessage(WithBody):
    """Generation parameters as in `/v1/ws`'s `chat`; the room's history is the context."""

    own_fields: ClassVar[frozenset[str]] = frozenset({"content"})
    type: Literal["ask"]
    content: StrictStr = Field(min_length=1)
    body: dict[str, Any]

    def request(self, user: str) -> ChatCompletionRequest:
        """The chat request of this question (ValidationError for bad parameters)."""
        body = {"model": "auto", **self.body}
        body["messages"] = [{"role": "user", "content": spoken(user, self.content)}]
        return ChatCompletionRequest.model_validate(body)


class TypingMessage(MessageBase):
    type: Literal["typing"]
    active: StrictBool


class CancelAnswer(MessageBase):
    type: Literal["cancel"]


class LeaveMessage(MessageBase):
    type: Literal["leave"]


class PingMessage(MessageBase):
    type: Literal["ping"]


RoomMessage = Annotated[
    JoinMessage
    | SayMessage
    | AskMessage
    | TypingMessage
    | CancelAnswer
    | LeaveMessage
    | PingMessage,
    Field(discriminator="type"),
]
ROOM_MESSAGE: TypeAdapter[RoomMessage] = TypeAdapter(RoomMessage)


def parse_room_message(raw: str | bytes) -> RoomMessage | WsError:
    return parse_message(ROOM_MESSAGE, raw, "join, say, ask, typing, cancel, leave, ping")


def spoken(user: str, content: str) -> str:
    """A member's message as the AI (and the conversation) sees it: who said what."""
    return f"{user}: {content}"


def said_by(text: str) -> tuple[str, str]:
    """`spoken` undone: names have no ':', so the first one ends the name."""
    user, sep, content = text.partition(": ")
    return (user, content) if sep and _NAME.fullmatch(user) else ("", text)


def event_frame(event: RoomEvent, pos: int) -> dict[str, Any] | None:
    """What members see of an event, or None (an `alive`; an event `state` found stale)."""
    base = {"member": event.member, "user": event.user}
    match event:
        case MemberJoined():
            return {"type": "presence", **base, "status": "joined", "pos": pos}
        case MemberLeft():
            return {
                "type": "presence",
                **base,
                "status": "left",
                "reason": event.reason,
                "pos": pos,
            }
        case MemberTyping():
            frame = {"type": "typing", **base, "active": event.active, "ttl_s": TYPING_TTL_S}
            return {**frame, "pos": pos}
        case MemberSaid():
            return {
                **message(event.message_id, event.member, event.user, event.content),
                "pos": pos,
            }
        case MemberAsked():
            said = message(event.message_id, event.member, event.user, event.content)
            return {**said, "request_id": event.request_id, "pos": pos}
        case Answered():
            frame = message(event.message_id, event.member, ASSISTANT, event.content, ASSISTANT)
            return {**frame, "request_id": event.request_id, "status": event.status, "pos": pos}
    return None


def message(
    item_id: str, member: str | None, user: str, content: str, role: str = "user"
) -> dict[str, Any]:
    frame = {"type": "message", "id": item_id, "user": user, "role": role, "content": content}
    return frame if member is None else {**frame, "member": member}


__all__ = [
    "ROOM_MESSAGE",
    "AskMessage",
    "CancelAnswer",
    "JoinMessage",
    "LeaveMessage",
    "PingMessage",
    "RoomMessage",
    "SayMessage",
    "TypingMessage",
    "WsError",
    "event_frame",
    "parse_room_message",
    "reply",
    "said_by",
    "spoken",
]
