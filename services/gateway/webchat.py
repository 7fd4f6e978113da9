"""The web chat: `/` serves the page, `/static/...` its scripts and styles, with security headers.

The headers are added by a wrapper around these two endpoints only, not by an app-wide
middleware, so the API's hot path (SSE, one write per token) pays nothing for them.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"

SECURITY_HEADERS: dict[str, str] = {
    # Scripts, styles and fetches only from this origin: model output can never load or run
    # anything, even if it slipped past the sanitizer.
    "content-security-policy": (
        "default-src 'self'; base-uri 'none'; object-src 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Revalidate (ETag) on each load, so a new gateway version is never mixed with old scripts.
    "cache-control": "no-cache",
}
_RAW_HEADERS = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """ASGI wrapper: sets `SECURITY_HEADERS` on every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.decode() for k, _ in _RAW_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.decode() not in names]
                message["headers"] = kept + _RAW_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_webchat(app: FastAPI) -> None:
    app.mount("/static", SecurityHeaders(StaticFiles(directory=STATIC_DIR)), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)
