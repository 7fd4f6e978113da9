"""A lean HTTP/1.1 streaming client (asyncio Protocol): ~5x less CPU per stream than httpx."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from services.bench.client import Stream, StreamCounters, http_clients, run_stream

Send = Callable[[int, Stream, dict[str, Any], StreamCounters], Awaitable[None]]


class _Response:
    """Parses one response: head, then a chunked, sized or until-close body. Body bytes are
    kept as (receive time, bytes) in the stream, one entry per read (as a socket delivers)."""

    def __init__(self, s: Stream, counters: StreamCounters) -> None:
        self.s, self.counters = s, counters
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.head = True
        self.chunked = False
        self.trailers = False
        self.left = -1  # bytes left: of the sized body, or of the current chunk (+2 for CRLF)
        self.keep_alive = True

    def feed(self, t: float, data: bytes) -> None:
        if self.done.done():
            return
        if self.head:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head(t, self.buf[:end].decode("latin-1"))
            data, self.buf = self.buf[end + 4 :], b""
        if self.chunked:
            self._chunks(t, data)
        elif data:
            self.s.chunks.append((t, data))
            if self.left >= 0:
                self.left -= len(data)
                if self.left <= 0:
                    self._finish()
        elif self.left == 0:
            self._finish()

    def _head(self, t: float, text: str) -> None:
        status, *lines = text.split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        self.s.t_headers, self.s.status = t, int(status.split(" ", 2)[1])
        self.s.request_id = headers.get("x-request-id")
        self.s.model = headers.get("x-tokenbus-model")
        self.chunked = "chunked" in headers.get("transfer-encoding", "")
        self.left = -1 if self.chunked else int(headers.get("content-length", -1))
        self.keep_alive = headers.get("connection") != "close"
        self.head = False
        self.counters.open += 1

    def _chunks(self, t: float, data: bytes) -> None:
        buf, pos, out = self.buf + data, 0, []
        while True:
            if self.left > 0:  # inside a chunk: its data, then its CRLF
                piece = buf[pos : pos + self.left]
                data_left = self.left - 2
                pos += len(piece)
                self.left -= len(piece)
                if data_left > 0:
                    out.append(piece[:data_left])
                if self.left > 0:
                    break
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line, pos = buf[pos:eol], eol + 2
            if self.trailers:  # after the last chunk: trailer lines, then an empty line
                if not line:
                    self._finish()
                    break
                continue
            size = int(line.split(b";")[0], 16)
            self.trailers = size == 0
            self.left = size + 2 if size else -1
        self.buf = buf[pos:]
        if out:
            self.s.chunks.append((t, b"".join(out)))

    def _finish(self) -> None:
        if not self.done.done():
            self.counters.open -= 1
            self.done.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if not self.head and not self.chunked and self.left < 0:
            self._finish()  # a body delimited by the end of the connection
            return
        if not self.head:
            self.counters.open -= 1
        self.done.set_exception(ConnectionError(f"connection lost mid-response: {exc}"))


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is not None:
            self.response.feed(time.time(), data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response.lost(exc)


class LeanPool:
    """One keep-alive connection per closed-loop client (slot); reconnects when closed."""

    def __init__(self, url: str, timeout_s: float, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base = parts.path.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n"
        self.head += f"Accept: text/event-stream\r\n{extra}"
        self.timeout_s = timeout_s
        self.conns: dict[int, _Connection] = {}

    async def send(
        self, slot: int, s: Stream, body: dict[str, Any], counters: StreamCounters
    ) -> None:
        payload = json.dumps(body).encode()
        request = (
            f"POST {self.base}/chat/completions HTTP/1.1\r\n{self.head}"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        counters.inflight += 1
        s.t_send = time.time()
        conn = self.conns.get(slot)
        try:
            if conn is None or conn.closed:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
                self.conns[slot] = conn
            conn.response = response = _Response(s, counters)
            assert conn.transport is not None
            conn.transport.write(request)
            await asyncio.wait_for(response.done, self.timeout_s)
            if not response.keep_alive:
                conn.transport.close()
        except asyncio.CancelledError:
            s.error = "cancelled: not finished by the load deadline"
            self._drop(slot)
            raise
        except Exception as exc:
            s.error = f"{type(exc).__name__}: {exc}"[:300]
            self._drop(slot)
        finally:
            s.t_end = time.time()
            counters.inflight -= 1
            counters.done += 1

    def _drop(self, slot: int) -> None:
        conn = self.conns.pop(slot, None)
        if conn is not None and conn.transport is not None:
            conn.response = None
            conn.transport.close()

    def close(self) -> None:
        for slot in list(self.conns):
            self._drop(slot)


@contextlib.asynccontextmanager
async def open_sender(
    url: str, streams: int, timeout_s: float, headers: dict[str, str]
) -> AsyncIterator[Send]:
    """`send(slot, stream, body, counters)` to `url` (an OpenAI base URL): the lean client for
    http://, httpx (sharded AsyncClients) for anything else, e.g. https://."""
    if url.startswith("http://"):
        pool = LeanPool(url, timeout_s, headers)
        try:
            yield pool.send
        finally:
            pool.close()
        return
    async with http_clients(url, streams, timeout_s, headers=headers) as clients:

        async def send(slot: int, s: Stream, body: dict[str, Any], c: StreamCounters) -> None:
            await run_stream(clients[slot % len(clients)], s, body, c, "/chat/completions")

        yield send
