"""Exceptions of the edge and their OpenAI-style error bodies; bad input is never a 500."""

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts import ErrorCode

log = structlog.get_logger("gateway")


class ApiError(Exception):
    """An error the client should see, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.code, self.headers = code, headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_for_code(code: ErrorCode, message: str) -> ApiError:
    """A worker's `failed` event before any text, as an HTTP error."""
    status = {
        ErrorCode.INVALID_REQUEST: 400,
        ErrorCode.OVERLOADED: 429,
        ErrorCode.BACKEND_TIMEOUT: 504,
        ErrorCode.STREAM_TIMEOUT: 504,
        ErrorCode.DEADLINE_EXCEEDED: 504,
    }.get(code, 502)
    kind = "invalid_request_error" if status == 400 else "api_error"
    return ApiError(status, message, type_=kind, code=code.value)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "null"})


def _param(loc: tuple[Any, ...]) -> str | None:
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request."
        else:
            message = f"Invalid value for '{_param(tuple(first['loc'])) or 'body'}': {first['msg']}"
        err = ApiError(400, message, param=_param(tuple(first["loc"])), code="invalid_value")
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, never bad input: log it with its trace, but tell the client nothing of it.
        log.exception("unhandled_error", path=request.url.path, error=type(exc).__name__)
        err = ApiError(
            500,
            "The server had an error processing your request.",
            type_="api_error",
            code=ErrorCode.INTERNAL.value,
        )
        return JSONResponse(err.body(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            err = body_too_large(request.app.max_body_size)
        else:
            err = ApiError(
                exc.status_code,
                str(exc.detail),
                code=None,
                type_="invalid_request_error" if exc.status_code < 500 else "api_error",
            )
        return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)


def body_too_large(limit: int | None) -> ApiError:
    return ApiError(
        413,
        f"The request body is too large: at most {limit} bytes are accepted.",
        code="request_too_large",
    )


class DeclaredBodyLimit:
    """Answers a `Content-Length` over the limit with the OpenAI-style 413 at once.

    Starlette's body limiter (`FastAPI(max_body_size=...)`, inside this) answers a declared
    length over the limit with a plain-text 413 of its own, whatever the app's handlers say; a
    body without a length (chunked) it counts while it is read, and that 413 does reach our
    handler. So this wrapper only looks at the header.
    """

    def __init__(self, app: ASGIApp, limit: int | None) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limit is not None:
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.limit:
                err = body_too_large(self.limit)
                response = JSONResponse(
                    err.body(), status_code=413, headers={"connection": "close"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
