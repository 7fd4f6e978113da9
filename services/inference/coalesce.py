"""Merge tokens that arrive within a short window into one delta event (0 = one per token)."""

import asyncio
from collections.abc import Awaitable, Callable


class Coalescer:
    """Buffers text for at most `window_s` after its first token, then emits it as one piece.

    The very first token goes out at once: coalescing trades inter-token latency for broker
    load, and must never cost time to first token.
    """

    def __init__(self, window_s: float, emit: Callable[[str], Awaitable[None]]) -> None:
        self._window = window_s
        self._emit = emit
        self._buffer: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._first = True

    async def add(self, text: str) -> None:
        if self._window <= 0 or self._first:
            self._first = False
            await self._emit(text)
            return
        self._buffer.append(text)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._window, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer = None
        # Chained after the previous flush: pieces go out one at a time and in order even when
        # an emit outlasts the window, and an emit's error reaches `flush()` instead of a log.
        self._flushing = asyncio.ensure_future(self._emit_after(self._flushing))

    async def _emit_after(self, previous: "asyncio.Future[None] | None") -> None:
        if previous is not None:
            await previous
        await self._emit_buffer()

    async def _emit_buffer(self) -> None:
        if self._buffer:
            text = "".join(self._buffer)
            self._buffer.clear()
            await self._emit(text)

    async def flush(self) -> None:
        """Emit what is buffered now (before a terminal event)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await self._flushing
            self._flushing = None
        await self._emit_buffer()
