"""Merge pieces of the answer that arrive within a short window into one delta (0 = one each).

A piece is one kind of thing a backend streams: text, refusal text, reasoning text, or a
fragment of one tool call. Consecutive pieces of the same kind merge (text concatenates,
argument fragments of the same tool call concatenate); a new kind or a new tool call index
ends the merge, and the pieces always go out in the order they came.
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["content", "refusal", "reasoning", "tool"]


@dataclass(slots=True)
class Piece:
    """One upstream fragment. For `tool`, `text` is an argument fragment, and the first
    fragment of an index carries the call's `id` and `name`."""

    kind: Kind
    text: str = ""
    index: int = 0
    id: str | None = None
    name: str | None = None
    logprobs: list[Any] | None = None  # the tokens' logprob entries, when asked for


@dataclass(slots=True)
class _Run:
    """Pieces being merged into one: the first of them, and the text of all."""

    head: Piece
    texts: list[str] = field(default_factory=list)
    logprobs: list[Any] | None = None

    def takes(self, piece: Piece) -> bool:
        if piece.kind != self.head.kind:
            return False
        if piece.kind == "tool":  # a continuation of the same call: no id or name of its own
            return piece.index == self.head.index and piece.id is None and piece.name is None
        return True

    def add(self, piece: Piece) -> None:
        self.texts.append(piece.text)
        if piece.logprobs:
            self.logprobs = [*(self.logprobs or ()), *piece.logprobs]

    def piece(self) -> Piece:
        head = self.head
        return Piece(head.kind, "".join(self.texts), head.index, head.id, head.name, self.logprobs)


@dataclass(frozen=True, slots=True)
class Window:
    """How long pieces merge, by how busy the worker is.

    Every message costs CPU in the worker, the broker and the gateway, whatever its size; under
    load that cost is what queues requests, while one reader alone feels each window as
    inter-token latency. So the window is `idle_s` for a lone stream and grows linearly to
    `busy_s` as `busy_at` more generations run beside it. `idle_s` 0 turns merging off.
    """

    idle_s: float
    busy_s: float = 0.0
    busy_at: int = 1

    def at(self, active: int) -> float:
        if self.idle_s <= 0 or self.busy_s <= self.idle_s or active <= 1:
            return max(self.idle_s, 0.0)
        share = min(1.0, (active - 1) / max(self.busy_at, 1))
        return self.idle_s + (self.busy_s - self.idle_s) * share


class Coalescer:
    """Buffers pieces for at most one window after the first of them, then emits each run of
    one kind as one piece.

    The very first piece goes out at once: coalescing trades inter-token latency for broker
    load, and must never cost time to first token. `window_s` is a number, or a function read
    whenever a window opens (so it follows the worker's load).
    """

    def __init__(
        self, window_s: float | Callable[[], float], emit: Callable[[Piece], Awaitable[None]]
    ) -> None:
        self._window: Callable[[], float] = (
            window_s if callable(window_s) else functools.partial(float, window_s)
        )
        self._emit = emit
        self._run: _Run | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future[None] | None = None
        self._first = True

    async def add(self, piece: Piece) -> None:
        if self._first or (window := self._window()) <= 0:
            self._first = False
            await self._emit(piece)
            return
        run = self._run
        if run is None or not run.takes(piece):
            if run is not None:
                self._send_run()  # a new kind or call: what came before goes out first
            run = self._run = _Run(piece)
        run.add(piece)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(window, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer = None
        self._send_run()

    def _send_run(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            # Chained after the previous send: pieces go out one at a time and in order even
            # when an emit outlasts the window, and an emit's error reaches `flush()`.
            self._flushing = asyncio.ensure_future(self._emit_after(self._flushing, run.piece()))

    async def _emit_after(self, previous: "asyncio.Future[None] | None", piece: Piece) -> None:
        if previous is not None:
            await previous
        await self._emit(piece)

    async def flush(self) -> None:
        """Emit what is buffered now (before a terminal event)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._send_run()
        if self._flushing is not None:
            await self._flushing
            self._flushing = None
