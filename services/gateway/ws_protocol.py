"""The JSON messages of `WS /v1/ws`: client messages parsed without raising, server frames.

Pure functions and models, no I/O: `parse_client_message` turns any text into either a
validated message or a `WsError` to send back; the frame builders render what the server says.
"""

import json
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from contracts import Delta, EdgeCode, ErrorCode, StreamEvent
from services.common.openai_errors import Code, OpenAIError, param_from_loc
from services.fanout.hub import SubscriberDropped
from services.gateway.openai_wire import ChatCompletionRequest
from services.gateway.responses.wire import ResponsesRequest

ClientId = Annotated[StrictStr, Field(max_length=128)] | StrictInt | None
RequestId = Annotated[StrictStr, Field(min_length=1, max_length=128)]

# Keys of a `chat` message that are not part of the chat-completions body.
_ENVELOPE = frozenset({"type", "id", "deadline_s"})
# Body keys the socket decides itself: a WebSocket answer is always streamed.
_IGNORED = frozenset({"stream"})
# Event fields that say nothing to a client (delivery bookkeeping, SSE rendering hints): a set,
# not a frozenset, as that is what `model_dump(exclude=...)` is typed to take.
_INTERNAL = {"schema_version", "event_id", "ts", "attempt", "include_usage", "role", "created"}

M = TypeVar("M")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class MessageBase(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: ClientId = Field(default=None, description="Client's id, echoed in the reply")


class AuthMessage(MessageBase):
    type: Literal["auth"]
    api_key: StrictStr = Field(max_length=512)


class WithBody(MessageBase):
    """A request body, sent flat next to `type` and `id`."""

    own_fields: ClassVar[frozenset[str]] = frozenset()
    deadline_s: float | None = Field(default=None, ge=1, le=86_400)

    @model_validator(mode="before")
    @classmethod
    def _split_body(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        envelope = _ENVELOPE | cls.own_fields
        body = {k: v for k, v in data.items() if k not in envelope and k not in _IGNORED}
        return {**{k: v for k, v in data.items() if k in envelope}, "body": body}


class ChatMessage(WithBody):
    """The chat-completions body; `conversation` keeps the chat in a conversation."""

    own_fields: ClassVar[frozenset[str]] = frozenset({"conversation"})
    type: Literal["chat"]
    conversation: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    body: ChatCompletionRequest


class ResponseCreateMessage(WithBody):
    """A Responses API request (`POST /v1/responses`'s body), streamed on the socket."""

    type: Literal["response.create"]
    body: ResponsesRequest


class CancelMessage(MessageBase):
    type: Literal["cancel"]
    request_id: RequestId


class ResumeMessage(MessageBase):
    type: Literal["resume"]
    request_id: RequestId
    last_seq: StrictInt = Field(default=-1, ge=-1, description="Last seq the client has")


class PingMessage(MessageBase):
    type: Literal["ping"]


ClientMessage = Annotated[
    AuthMessage | ChatMessage | ResponseCreateMessage | CancelMessage | ResumeMessage | PingMessage,
    Field(discriminator="type"),
]
CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


class WsError(BaseModel):
    """An `error` frame; the socket stays open after it."""

    model_config = ConfigDict(frozen=True)

    code: Code
    message: str
    id: ClientId = None
    request_id: str | None = None
    param: str | None = None
    retryable: bool = False
    last_seq: int | None = None
    pos: int | None = None  # rooms: the last room position the client got
    retry_after_s: int | None = None

    def frame(self) -> str:
        return _encode({"type": "error", **self.model_dump(exclude_none=True)})


def parse_client_message(raw: str | bytes) -> ClientMessage | WsError:
    """A validated client message, or the error to answer it with. Never raises."""
    return parse_message(CLIENT_MESSAGE, raw, "auth, chat, response.create, cancel, resume, ping")


def parse_message(adapter: TypeAdapter[M], raw: str | bytes, types: str) -> M | WsError:
    """A message of `adapter`'s union (`types` names them for the error), or the error frame."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return WsError(code=EdgeCode.INVALID_JSON, message="We could not parse the JSON message.")
    if not isinstance(data, dict):
        return WsError(code=EdgeCode.INVALID_JSON, message="A message must be a JSON object.")
    client_id = _client_id(data.get("id"))
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        return _invalid(exc, client_id, types)


def _client_id(value: Any) -> str | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= 128):
        return value
    return None


def _invalid(exc: ValidationError, client_id: str | int | None, types: str) -> WsError:
    first = exc.errors()[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return WsError(
            code=EdgeCode.UNKNOWN_TYPE,
            message=f"Unknown message type; expected one of: {types}.",
            id=client_id,
            param="type",
        )
    # loc = (type tag, field, ...); a chat body's fields sit under "body", cut by _param.
    param = param_from_loc(tuple(first["loc"])[1:])
    return WsError(
        code=EdgeCode.INVALID_VALUE,
        message=f"Invalid value for '{param or 'message'}': {first['msg']}",
        id=client_id,
        param=param,
    )


def event_frame(event: StreamEvent) -> str:
    """A stream event as the client sees it; deltas are built by hand (once per token)."""
    if isinstance(event, Delta) and event.plain:
        return (
            f'{{"type":"delta","request_id":{_encode(event.request_id)},'
            f'"seq":{event.seq},"content":{_encode(event.content)}}}'
        )
    if isinstance(event, Delta):  # tool calls, refusal, reasoning, logprobs: only what is set
        return _encode(event.model_dump(mode="json", exclude=_INTERNAL, exclude_none=True))
    return _encode(event.model_dump(mode="json", exclude=_INTERNAL))


def response_frame(response_id: str, event: dict[str, Any]) -> str:
    """A Responses API event, named for its response (a socket may carry several)."""
    return _encode({**event, "response_id": response_id})


def error_frame(code: Code, message: str, **fields: Any) -> str:
    return WsError(code=code, message=message, **fields).frame()


def reply(type_: str, **fields: Any) -> str:
    """`ack`, `pong`, `heartbeat`: the fields given, None values left out."""
    return _encode({"type": type_, **{k: v for k, v in fields.items() if v is not None}})


def from_error(exc: OpenAIError, client_id: ClientId, request_id: str | None = None) -> str:
    """The HTTP API's refusal as an `error` frame: the same code, message and parameter."""
    return error_frame(
        exc.code or ErrorCode.INTERNAL,
        exc.message,
        id=client_id,
        request_id=request_id,
        param=exc.param,
        retryable=exc.retryable,
        retry_after_s=getattr(exc, "retry_after_s", None),
    )


# The errors only the socket sends; each says whether retrying may help.
def unauthenticated(client_id: ClientId) -> str:
    message = 'Authenticate first: send {"type": "auth", "api_key": "<key>"}.'
    return error_frame(EdgeCode.INVALID_API_KEY, message, id=client_id)


def already_streaming(client_id: ClientId, request_id: str) -> str:
    message = "This socket already receives that stream."
    return error_frame(EdgeCode.ALREADY_STREAMING, message, id=client_id, request_id=request_id)


def stalled(request_id: str, last_seq: int) -> str:
    message = "The answer stalled; resume from last_seq or retry."
    return error_frame(
        ErrorCode.STREAM_TIMEOUT,
        message,
        request_id=request_id,
        retryable=True,
        last_seq=last_seq,
    )


def cut(request_id: str, last_seq: int, why: SubscriberDropped) -> str:
    """The feed was cut (a slow client, or this node shutting down): resume from last_seq."""
    message = f"{why.message[:1].upper()}{why.message[1:]} (last_seq)."
    return error_frame(why.code, message, request_id=request_id, retryable=True, last_seq=last_seq)
