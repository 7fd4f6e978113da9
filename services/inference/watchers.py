"""Who still watches each running request; nobody back within the grace period = cancel.

Control events come from any gateway node in one ordered partition, so a count per request
is enough: the asker is the first watcher, `client_attached` adds one, `client_detached`
removes one, and at zero a timer of `grace_s` starts that any new watcher stops.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

_EARLY_TTL_S = 300.0


@dataclass(slots=True)
class _Early:
    delta: int
    grace_s: float
    at: float


class Watchers:
    """Per-request watcher counts and grace timers; calls `abandon(request_id)` at expiry."""

    def __init__(self, abandon: Callable[[str], object]) -> None:
        self._abandon = abandon
        self._counts: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Watch events can overtake their request (different topics): keep them briefly.
        self._early: dict[str, _Early] = {}

    def track(self, request_id: str) -> None:
        self._counts[request_id] = 1
        early = self._early.pop(request_id, None)
        if early is not None:
            self._change(
                request_id, early.delta, max(0.0, early.grace_s - (time.monotonic() - early.at))
            )

    def untrack(self, request_id: str) -> None:
        self._counts.pop(request_id, None)
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.cancel()

    def attach(self, request_id: str) -> None:
        self._change(request_id, +1, 0.0)

    def detach(self, request_id: str, grace_s: float) -> None:
        self._change(request_id, -1, grace_s)

    def _change(self, request_id: str, delta: int, grace_s: float) -> None:
        if request_id not in self._counts:
            self._remember(request_id, delta, grace_s)
            return
        count = self._counts[request_id] = self._counts[request_id] + delta
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.cancel()
        if count <= 0:
            loop = asyncio.get_running_loop()
            self._timers[request_id] = loop.call_later(grace_s, self._expire, request_id)

    def _expire(self, request_id: str) -> None:
        self._timers.pop(request_id, None)
        if self._counts.get(request_id, 1) <= 0:
            self._abandon(request_id)

    def _remember(self, request_id: str, delta: int, grace_s: float) -> None:
        now = time.monotonic()
        self._early = {r: e for r, e in self._early.items() if now - e.at < _EARLY_TTL_S}
        early = self._early.get(request_id)
        if early is None:
            self._early[request_id] = _Early(delta, grace_s, now)
        else:
            early.delta += delta
            early.grace_s = grace_s if delta < 0 else early.grace_s
