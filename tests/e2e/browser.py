"""Headless Chromium for the web chat's tests, and a proxy that cuts a connection mid-answer.

Chromium is Debian's package (`/usr/bin/chromium`), driven through Playwright for Python;
Playwright's own browser download (`playwright install`) is never used.
"""

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> Path | None:
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


@contextlib.asynccontextmanager
async def chromium(executable: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


# Records every text the answers' status lines show, so a test can tell that the page said
# "connection lost" even though the message is gone again by the time the answer is whole.
RECORD_STATUSES = """
window.__statuses = [];
new MutationObserver(() => {
  for (const s of document.querySelectorAll("article.assistant .status")) {
    const text = s.textContent;
    if (text && window.__statuses.at(-1) !== text) window.__statuses.push(text);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


# Chromium's own retries of a dropped request follow it within milliseconds; the page's next
# try waits for its backoff, at least 150 ms.
RETRY_WINDOW_S = 0.1


# What the proxy cuts, per API: the request that starts an answer, and the one that resumes it.
CUTS = {
    "chat": (b"POST /v1/chat/completions ", b"GET /v1/streams/"),
    "responses": (b"POST /v1/responses ", b"GET /v1/responses/"),
}


class CuttingProxy:
    """A TCP proxy in front of the gateway. Once armed, it lets the next
    `POST /v1/chat/completions` response (for `api="responses"`: `POST /v1/responses`) through
    for `after` bytes (headers included), then drops that connection: to the browser, the
    network failed in the middle of the answer. The next `refuse` resume attempts
    (`GET /v1/streams/...`, or `GET /v1/responses/...`) are dropped too, unanswered, as while
    the network is still down. Everything else passes untouched.

    Chromium re-sends a GET that a reused keep-alive connection dropped before any answer at
    once on another connection, as often as the page has idle connections (a page that loads
    one more script has one more): such retries belong to the attempt they repeat, are dropped
    with it and are not counted, so `refuse` is the number of the page's own tries."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._armed: int | None = None
        self._refuse = 0
        self._cut, self._resume = CUTS["chat"]
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()
        self._retries_until = 0.0  # loop time until which a resume is a retry of a dropped one
        self.cuts = 0
        self.refused = 0  # resume attempts dropped, Chromium's own retries not counted

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def arm(self, after: int, refuse: int = 0, api: str = "chat") -> None:
        self._armed, self._refuse = after, refuse
        self._cut, self._resume = CUTS[api]

    async def __aenter__(self) -> "CuttingProxy":
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in list(self._transports):
            transport.abort()  # the pumps see the end of their streams and finish
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self._target_port)
        transports = {client_w.transport, upstream_w.transport}
        self._transports |= transports
        budget: list[int | None] = [None]  # response bytes left before the cut, when armed
        pumps = [
            asyncio.create_task(self._requests(client_r, upstream_w, budget)),
            asyncio.create_task(self._responses(upstream_r, client_w, budget)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            # A pump that ended on a reset socket has nothing more to say.
            await asyncio.gather(*pumps, return_exceptions=True)
            for transport in transports:
                transport.abort()  # an RST, not a polite close: a dropped network
            self._transports -= transports
            self._tasks.discard(task)

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, budget: list[int | None]
    ) -> None:
        while data := await source.read(65536):
            # Browsers send one request at a time per connection: a request starts a read.
            if self._armed is not None and data.startswith(self._cut):
                budget[0], self._armed = self._armed, None
            elif data.startswith(self._resume) and self._refuses():
                return  # torn down by the caller, before the gateway sees the request
            sink.write(data)
            await sink.drain()

    def _refuses(self) -> bool:
        """Whether to drop this resume request: one of the next `refuse` attempts, or a retry."""
        now = asyncio.get_running_loop().time()
        if now >= self._retries_until:
            if not self._refuse:
                return False
            self._refuse -= 1
            self.refused += 1
        self._retries_until = now + RETRY_WINDOW_S
        return True

    async def _responses(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, budget: list[int | None]
    ) -> None:
        while data := await source.read(65536):
            left = budget[0]
            if left is not None and len(data) >= left:
                sink.write(data[:left])
                await sink.drain()
                self.cuts += 1
                return  # the cut: both sides are torn down by the caller
            if left is not None:
                budget[0] = left - len(data)
            sink.write(data)
            await sink.drain()
