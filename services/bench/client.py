"""A cheap streaming chat client: raw SSE over httpx, chunks timestamped now and parsed later."""

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

STREAMS_PER_CLIENT = 25  # default sharding of streams over httpx clients (see `http_clients`)
CHAT_PATH = "/v1/chat/completions"


@dataclass(slots=True)
class Stream:
    """One client stream: what was sent, and every raw chunk with its receive time."""

    index: int
    messages: list[dict[str, str]]
    t_send: float = 0.0
    t_headers: float = 0.0
    t_end: float = 0.0
    status: int | None = None
    request_id: str | None = None
    model: str | None = None
    error: str | None = None
    chunks: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass
class StreamCounters:
    """Streams in flight now, for samplers that watch the load while it runs."""

    inflight: int = 0  # request sent, response not finished: the server holds a connection
    open: int = 0  # response headers received, body still streaming
    done: int = 0


def chat_body(messages: list[dict[str, str]], model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens}


async def run_stream(
    client: httpx.AsyncClient,
    s: Stream,
    body: dict[str, Any],
    counters: StreamCounters,
    path: str = CHAT_PATH,
) -> None:
    """POST one streaming completion and keep its raw body chunks; parsing happens later."""
    now = time.time
    chunks = s.chunks
    counters.inflight += 1
    s.t_send = now()
    try:
        async with client.stream("POST", path, json=body) as resp:
            s.t_headers = now()
            s.status = resp.status_code
            s.request_id = resp.headers.get("x-request-id")
            s.model = resp.headers.get("x-tokenbus-model")
            counters.open += 1
            try:
                async for chunk in resp.aiter_raw():
                    chunks.append((now(), chunk))
            finally:
                counters.open -= 1
    except asyncio.CancelledError:
        s.error = "cancelled: not finished by the load deadline"
        raise
    except Exception as exc:
        s.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        s.t_end = now()
        counters.inflight -= 1
        counters.done += 1


@contextlib.asynccontextmanager
async def http_clients(
    base_url: str,
    streams: int,
    timeout_s: float,
    clients: int = 0,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """AsyncClients to shard `streams` concurrent streams over (0 = one per 25 streams).

    httpcore 1.0.x's pool re-scans every connection for every queued request on each request
    start and end (AsyncConnectionPool._assign_requests_to_connections, O(conns x requests),
    encode/httpcore#1035): one client holding 1000 streams blocks its own event loop for
    seconds, so each client holds only a few dozen.
    """
    n = clients or max(1, math.ceil(streams / STREAMS_PER_CLIENT))
    per_client = math.ceil(streams / n) + 10
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    timeout = httpx.Timeout(timeout_s, connect=30.0)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base_url, limits=limits, timeout=timeout, headers=headers
                )
            )
            for _ in range(n)
        ]


# --------------------------------------------------------------------------- after the load


def parse_frames(
    chunks: list[tuple[float, bytes]],
) -> tuple[list[tuple[float, int | None, bytes]], bytes]:
    """SSE frames as (receive time of the chunk that completed it, id, data); and leftovers."""
    frames: list[tuple[float, int | None, bytes]] = []
    buf = b""
    for t, chunk in chunks:
        buf += chunk.replace(b"\r\n", b"\n")
        while (i := buf.find(b"\n\n")) >= 0:
            raw, buf = buf[:i], buf[i + 2 :]
            seq: int | None = None
            data: list[bytes] = []
            for line in raw.split(b"\n"):
                if line.startswith(b"id:"):
                    seq = int(line[3:].strip())
                elif line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                # ":" comments (pings) and other fields are ignored
            if data:
                frames.append((t, seq, b"\n".join(data)))
    return frames, buf


def unfinished_reason(frames: list[tuple[float, int | None, bytes]], rest: bytes) -> str:
    """Why a stream did not end with [DONE]: the error frame's code, if it sent one."""
    last = frames[-1][2][:300].decode(errors="replace") if frames else rest[:300].decode()
    if '"error"' not in last:
        return "no [DONE]"
    try:
        return f"error frame: {json.loads(last)['error'].get('code')}"
    except (ValueError, KeyError, AttributeError):
        return "error frame"


def chunk_content(data: bytes) -> tuple[str | None, str | None]:
    """A chunk's id (the request id) and its delta text, if any."""
    chunk = json.loads(data)
    choices = chunk.get("choices") or []
    return chunk.get("id"), choices[0].get("delta", {}).get("content") if choices else None


def failure(s: Stream) -> str | None:
    """Why a stream failed before its body could be read (transport error, HTTP status)."""
    if s.error or not s.t_send:
        return (s.error or "not started: load deadline").split(":")[0]
    if s.status != 200:
        body = b"".join(c for _, c in s.chunks)[:200].decode(errors="replace")
        return f"http_{s.status}: {body}"
    return None
