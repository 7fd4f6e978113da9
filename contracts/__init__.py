"""Event contracts and the topic registry: the only code every tokenbus service imports."""

from contracts.base import Event, utcnow
from contracts.chat import ChatRequested, Message
from contracts.control import (
    CONTROL_EVENT,
    CancelRequested,
    ClientAttached,
    ClientDetached,
    ControlEvent,
    GatewayAlive,
)
from contracts.dead_letter import DeadLetter
from contracts.errors import EdgeCode, ErrorCode
from contracts.request_id import (
    RequestRef,
    new_request_id,
    parse_request_id,
    request_belongs,
    request_of_response,
    response_id,
)
from contracts.stream import (
    STREAM_EVENT,
    TERMINAL_TYPES,
    Completed,
    Delta,
    Failed,
    Started,
    StreamEvent,
    TokenUsage,
    ToolCallPiece,
)
from contracts.topics import TOPICS, Topic, Topics
from contracts.usage import BackendTry, UsageRecorded

__all__ = [
    "CONTROL_EVENT",
    "STREAM_EVENT",
    "TERMINAL_TYPES",
    "TOPICS",
    "BackendTry",
    "CancelRequested",
    "ChatRequested",
    "ClientAttached",
    "ClientDetached",
    "Completed",
    "ControlEvent",
    "DeadLetter",
    "Delta",
    "EdgeCode",
    "ErrorCode",
    "Event",
    "Failed",
    "GatewayAlive",
    "Message",
    "RequestRef",
    "Started",
    "StreamEvent",
    "TokenUsage",
    "ToolCallPiece",
    "Topic",
    "Topics",
    "UsageRecorded",
    "new_request_id",
    "parse_request_id",
    "request_belongs",
    "request_of_response",
    "response_id",
    "utcnow",
]
