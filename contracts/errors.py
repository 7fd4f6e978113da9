"""One enum of error codes, shared by `failed` events and HTTP error bodies."""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a request failed; `retryable` says whether sending it again may succeed."""

    INVALID_REQUEST = "invalid_request"
    BACKEND_ERROR = "backend_error"
    BACKEND_TIMEOUT = "backend_timeout"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    WORKER_LOST = "worker_lost"
    STREAM_TIMEOUT = "stream_timeout"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OVERLOADED = "overloaded"
    INTERNAL = "internal_error"

    @property
    def retryable(self) -> bool:
        return self not in _FINAL


_FINAL = frozenset({ErrorCode.INVALID_REQUEST, ErrorCode.INTERNAL})


class EdgeCode(StrEnum):
    """Why the edge refused or ended something itself (HTTP and WebSocket alike), before or
    beside a request's own `ErrorCode`; the OpenAI error body's `code` is one of the two."""

    INVALID_VALUE = "invalid_value"
    INVALID_TYPE = "invalid_type"
    INVALID_JSON = "invalid_json"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    EMPTY_ARRAY = "empty_array"
    INTEGER_BELOW_MIN_VALUE = "integer_below_min_value"
    UNKNOWN_TYPE = "unknown_type"
    TOO_MANY_MESSAGES = "too_many_messages"
    MESSAGE_TOO_LONG = "message_too_long"
    CONTEXT_TOO_LONG = "context_too_long"
    MAX_TOKENS_TOO_LARGE = "max_tokens_too_large"
    UNSUPPORTED_CONTENT_PART = "unsupported_content_part"
    REQUEST_TOO_LARGE = "request_too_large"
    INVALID_API_KEY = "invalid_api_key"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    STREAM_NOT_FOUND = "stream_not_found"
    STREAM_EXPIRED = "stream_expired"
    RESPONSE_NOT_STARTED = "response_not_started"
    RESPONSE_EXPIRED = "response_expired"
    CONVERSATION_BUSY = "conversation_busy"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    SERVICE_UNAVAILABLE = "service_unavailable"
    MODEL_LOADING = "model_loading"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    SERVER_ERROR = "server_error"
    ALREADY_STREAMING = "already_streaming"
    SLOW_CONSUMER = "slow_consumer"
    SERVER_SHUTTING_DOWN = "server_shutting_down"
    # Rooms (docs/rooms.md)
    JOIN_REQUIRED = "join_required"
    ROOM_FULL = "room_full"
    TOO_MANY_ROOMS = "too_many_rooms"
    ROOM_BUSY = "room_busy"
    NOTHING_TO_CANCEL = "nothing_to_cancel"
