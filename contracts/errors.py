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
