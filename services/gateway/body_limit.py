"""The request body limit: an oversized body is OpenAI's 413, however it arrives."""

from fastapi import Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError


def body_too_large(limit: int | None) -> OpenAIError:
    return OpenAIError(
        413,
        f"The request body is too large: at most {limit} bytes are accepted.",
        code=EdgeCode.REQUEST_TOO_LARGE,
    )


def counted_body_too_large(request: Request, exc: StarletteHTTPException) -> OpenAIError | None:
    """Starlette's 413 for a body without a length, counted while read, as OpenAI's 413."""
    return body_too_large(request.app.max_body_size) if exc.status_code == 413 else None


class DeclaredBodyLimit:
    """Answers a `Content-Length` over the limit with the OpenAI-style 413 at once.

    Starlette's body limiter (`FastAPI(max_body_size=...)`, inside this) answers a declared
    length over the limit with a plain-text 413 of its own, whatever the app's handlers say; a
    body without a length (chunked) it counts while it is read, and that 413 does reach our
    handler (`counted_body_too_large`). So this wrapper only looks at the header.
    """

    def __init__(self, app: ASGIApp, limit: int | None) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limit is not None:
            length = Headers(scope=scope).get("content-length", "")
            if length.isdigit() and int(length) > self.limit:
                response = body_too_large(self.limit).response()
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
