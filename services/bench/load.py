"""Closed-loop load: C clients stream chat completions back to back; every answer is checked."""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.bench.client import (
    Stream,
    StreamCounters,
    chat_body,
    chunk_content,
    failure,
    parse_frames,
    unfinished_reason,
)
from services.bench.stats import token_arrivals, token_ends
from services.bench.wire import open_sender
from services.llmsim.text import answer_tokens

LLMSIM_DEFAULT_MAX_TOKENS = 64  # llmsim's default_max_tokens; the bench always sets max_tokens
MISMATCH = "text differs from llmsim's answer"
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """An OpenAI-compatible endpoint: base URL (ending in /v1), model, extra headers."""

    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Load:
    """What one scenario sends: `concurrency` clients for warm-up + `duration_s` seconds."""

    concurrency: int
    duration_s: float
    warmup_s: float
    max_tokens: int
    run_id: str
    timeout_s: float = 60.0


@dataclass
class LoadRun:
    """The streams of one scenario and its measured window [t0, t1) (wall clock)."""

    streams: list[Stream]
    t0: float
    t1: float
    peak_inflight: int


@dataclass(slots=True)
class Outcome:
    """One checked answer: ok or why not, TTFT, gaps between text frames, token arrivals."""

    ok: bool
    reason: str
    t_send: float
    t_end: float
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)


def prompt(run_id: str, client: int, k: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"bench {run_id} client {client} request {k}: go"}]


async def closed_loop(target: Target, load: Load, on_t0: Hook, on_t1: Hook) -> LoadRun:
    """Clients start over the first half of the warm-up, then each sends its next request as
    soon as the last one ended, until t1; `on_t0` and `on_t1` run at the window's edges."""
    c = load.concurrency
    counters = StreamCounters()
    streams: list[Stream] = []
    t0 = time.time() + load.warmup_s
    t1 = t0 + load.duration_s
    peak = 0
    async with open_sender(target.url, c, load.timeout_s, target.headers) as send:

        async def client_loop(i: int) -> None:
            await asyncio.sleep(i * load.warmup_s / 2 / c)
            for k in itertools.count():
                if time.time() >= t1:
                    return
                s = Stream(len(streams), prompt(load.run_id, i, k))
                streams.append(s)
                body = chat_body(s.messages, target.model, load.max_tokens)
                await send(i, s, body, counters)

        async def clock() -> None:
            nonlocal peak
            await asyncio.sleep(max(0.0, t0 - time.time()))
            await on_t0()
            while (left := t1 - time.time()) > 0:
                peak = max(peak, counters.inflight)
                await asyncio.sleep(min(0.1, left))
            await on_t1()

        tasks = [asyncio.create_task(client_loop(i)) for i in range(c)]
        ticking = asyncio.create_task(clock())
        _, pending = await asyncio.wait(tasks, timeout=t1 - time.time() + load.timeout_s + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await ticking
    return LoadRun(streams, t0, t1, peak)


def expected_tokens(s: Stream, max_tokens: int) -> list[str]:
    return answer_tokens(s.messages, max_tokens, LLMSIM_DEFAULT_MAX_TOKENS)


def check(s: Stream, expected: list[str]) -> Outcome:
    """ok = HTTP 200, ends with [DONE], no error frame, and exactly llmsim's `expected` text."""
    if why := failure(s):
        return Outcome(False, why, s.t_send, s.t_end)
    frames, rest = parse_frames(s.chunks)
    if not frames or frames[-1][2] != b"[DONE]":
        return Outcome(False, unfinished_reason(frames, rest), s.t_send, s.t_end)
    pieces: list[tuple[float, str]] = []
    for t, _, data in frames[:-1]:
        if data.startswith(b'{"error"'):
            return Outcome(False, unfinished_reason([(t, None, data)], b""), s.t_send, s.t_end)
        try:
            content = chunk_content(data)[1]
        except (ValueError, AttributeError, IndexError):
            return Outcome(False, "chunk is not OpenAI JSON", s.t_send, s.t_end)
        if content:
            pieces.append((t, content))
    if "".join(text for _, text in pieces) != "".join(expected):
        return Outcome(False, MISMATCH, s.t_send, s.t_end)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pieces)]
    arrivals = token_arrivals(pieces, token_ends(expected), s.t_send)
    return Outcome(True, "ok", s.t_send, s.t_end, pieces[0][0] - s.t_send, gaps, arrivals)
