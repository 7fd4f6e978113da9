"""OpenAI's error body, the exception that carries it, and the FastAPI handlers that send it.

The one place that builds `{"error": {"message", "type", "param", "code"}}`: the gateway, the
usage API, llmsim and the local model's relay raise `OpenAIError` (or let these handlers turn
validation and routing errors into it), so every service answers in the shape the SDKs parse.
Codes are members of `contracts.ErrorCode` or `contracts.EdgeCode`, never free strings.
"""

import json
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts import EdgeCode, ErrorCode

__all__ = [
    "Code",
    "OpenAIError",
    "error_body",
    "error_for_code",
    "install_error_handlers",
    "param_from_loc",
    "stream_error",
    "validation_error",
]

log = structlog.get_logger("errors")

Code = ErrorCode | EdgeCode

_STATUS_CODES = {
    401: EdgeCode.INVALID_API_KEY,
    403: EdgeCode.PERMISSION_DENIED,
    404: EdgeCode.NOT_FOUND,
    405: EdgeCode.METHOD_NOT_ALLOWED,
    413: EdgeCode.REQUEST_TOO_LARGE,
    429: EdgeCode.RATE_LIMIT_EXCEEDED,
    503: EdgeCode.SERVICE_UNAVAILABLE,
}


def error_body(message: str, type_: str, param: str | None, code: Code | None) -> dict[str, Any]:
    """The body itself; everything else in this module goes through here."""
    return {
        "error": {
            "message": message,
            "type": type_,
            "param": param,
            "code": None if code is None else code.value,
        }
    }


def stream_error(code: Code, message: str) -> str:
    """An error inside an SSE stream, compact; the OpenAI SDKs raise it as an APIError."""
    return json.dumps(error_body(message, "api_error", None, code), separators=(",", ":"))


class OpenAIError(Exception):
    """An error the client sees in OpenAI's shape, with its HTTP status and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: Code | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ("invalid_request_error" if status < 500 else "api_error")
        self.headers = headers

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (rate limits, outages, timeouts)."""
        if isinstance(self.code, ErrorCode):
            return self.code.retryable
        return self.status == 429 or self.status >= 500

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_for_code(code: ErrorCode, message: str) -> OpenAIError:
    """A worker's `failed` event before any text, as an HTTP error."""
    status = {
        ErrorCode.INVALID_REQUEST: 400,
        ErrorCode.OVERLOADED: 429,
        ErrorCode.BACKEND_TIMEOUT: 504,
        ErrorCode.STREAM_TIMEOUT: 504,
        ErrorCode.DEADLINE_EXCEEDED: 504,
    }.get(code, 502)
    return OpenAIError(status, message, code=code)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "null"})


def param_from_loc(loc: tuple[Any, ...]) -> str | None:
    """`messages.0.content` from pydantic's loc; union member tags (`str`, `list[...]`) cut."""
    parts: list[str] = []
    for item in loc:
        text = str(item)
        if item == "body" and not parts:
            continue
        if isinstance(item, str) and (text in _TYPE_TAGS or "[" in text):
            break
        parts.append(text)
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """FastAPI's 422 as OpenAI's 400, naming the first offending parameter."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = param_from_loc(tuple(first["loc"]))
    if first.get("type") == "json_invalid":
        message = "We could not parse the JSON body of your request."
    else:
        message = f"Invalid value for '{param or 'body'}': {first['msg']}"
    return OpenAIError(400, message, param=param, code=EdgeCode.INVALID_VALUE)


def install_error_handlers(
    app: FastAPI,
    *,
    on_invalid: Callable[[RequestValidationError], OpenAIError] = validation_error,
    on_http: Callable[[Request, StarletteHTTPException], OpenAIError | None] | None = None,
    on_answer: Callable[[OpenAIError], None] | None = None,
) -> None:
    """OpenAIError as itself; validation, routing and unexpected errors in the same shape.

    `on_invalid` words validation errors (llmsim mimics OpenAI's own codes); `on_http` may
    replace the error for a Starlette HTTP exception (None: the default rendering);
    `on_answer` sees every error answered (to count them).
    """

    def respond(err: OpenAIError) -> JSONResponse:
        if on_answer is not None:
            on_answer(err)
        return err.response()

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(on_invalid(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = on_http(request, exc) if on_http is not None else None
        if err is None:
            code = _STATUS_CODES.get(exc.status_code)
            if code is None and exc.status_code >= 500:
                code = EdgeCode.SERVER_ERROR
            err = OpenAIError(exc.status_code, str(exc.detail), code=code, headers=exc.headers)
        return respond(err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never bad input: log it with its trace, but tell the client nothing of it.
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        message = "The server had an error processing your request."
        return respond(OpenAIError(500, message, code=ErrorCode.INTERNAL))
