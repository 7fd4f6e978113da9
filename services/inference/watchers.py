"""Who still watches each running request; nobody back within the grace period = cancel.

Control events come from any gateway node in one ordered partition, so counts per request
are enough: the asker is the first watcher, `client_attached` adds one, `client_detached`
removes one, and at zero a timer of `grace_s` starts that any new watcher stops.

Counts are kept per gateway node, because a node can die without a word: a node silent for
`silence_s` (no `gateway_alive`) is lost, its watchers stop counting, and the grace timer
starts as if they had detached. A lost node that speaks again (the broker was away, not the
node) counts again; a node that died never does, since a restarted process is a new node.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("inference")

_EARLY_TTL_S = 300.0
# A node lost before it ever said its own grace period: the gateway's default.
_UNKNOWN_GRACE_S = 30.0


@dataclass(slots=True)
class _Early:
    at: float
    changes: list[tuple[str | None, int, float]] = field(default_factory=list)


@dataclass(slots=True)
class _Node:
    grace_s: float
    lost: bool = False
    timer: asyncio.TimerHandle | None = None


class Watchers:
    """Per-request watcher counts and grace timers; calls `abandon(request_id)` at expiry."""

    def __init__(self, abandon: Callable[[str], object], silence_s: float = 10.0) -> None:
        self._abandon = abandon
        self._silence_s = silence_s
        self._counts: dict[str, dict[str | None, int]] = {}  # request -> node -> watchers
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._nodes: dict[str, _Node] = {}
        # Watch events can overtake their request (different topics): keep them briefly.
        self._early: dict[str, _Early] = {}

    def track(self, request_id: str, node: str | None = None) -> None:
        self._counts[request_id] = {node: 1}
        self._see(node)
        early = self._early.pop(request_id, None)
        if early is not None:
            elapsed = time.monotonic() - early.at
            for at_node, delta, grace_s in early.changes:
                self._change(request_id, at_node, delta, max(0.0, grace_s - elapsed))
        self._settle(request_id, self._grace_of(node))

    def untrack(self, request_id: str) -> None:
        self._counts.pop(request_id, None)
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.cancel()

    def attach(self, request_id: str, node: str | None = None) -> None:
        self._change(request_id, node, +1, 0.0)

    def detach(self, request_id: str, grace_s: float, node: str | None = None) -> None:
        self._change(request_id, node, -1, grace_s)

    def alive(self, node: str, grace_s: float) -> None:
        """`node` said it is up: its watchers count (again) until it is silent too long."""
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _Node(grace_s)
        state.grace_s = grace_s
        came_back, state.lost = state.lost, False
        self._arm(node, state)
        if came_back:
            log.info("gateway_back", node=node)
            for request_id, counts in self._counts.items():
                if counts.get(node, 0) > 0:
                    self._settle(request_id, grace_s)

    def _see(self, node: str | None) -> None:
        if node is not None and node not in self._nodes:
            state = self._nodes[node] = _Node(_UNKNOWN_GRACE_S)
            self._arm(node, state)

    def _arm(self, node: str, state: _Node) -> None:
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(self._silence_s, self._lose, node)

    def _lose(self, node: str) -> None:
        state = self._nodes[node]
        state.lost, state.timer = True, None
        held = [r for r, counts in self._counts.items() if counts.get(node, 0) > 0]
        log.warning("gateway_lost", node=node, silent_s=self._silence_s, requests=len(held))
        for request_id in held:
            self._settle(request_id, state.grace_s)
        # Lost nodes no running request counts on are forgotten (one per dead process).
        counted = {n for counts in self._counts.values() for n in counts}
        self._nodes = {n: s for n, s in self._nodes.items() if not s.lost or n in counted}

    def _grace_of(self, node: str | None) -> float:
        state = self._nodes.get(node) if node is not None else None
        return state.grace_s if state is not None else _UNKNOWN_GRACE_S

    def _live(self, request_id: str) -> int:
        return sum(
            count
            for node, count in self._counts[request_id].items()
            if node is None or not (node in self._nodes and self._nodes[node].lost)
        )

    def _change(self, request_id: str, node: str | None, delta: int, grace_s: float) -> None:
        counts = self._counts.get(request_id)
        if counts is None:
            self._remember(request_id, node, delta, grace_s)
            return
        self._see(node)
        counts[node] = counts.get(node, 0) + delta
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.cancel()
        self._settle(request_id, grace_s)

    def _settle(self, request_id: str, grace_s: float) -> None:
        """No live watcher: the grace timer runs (if not already); any: it stops."""
        if self._live(request_id) > 0:
            timer = self._timers.pop(request_id, None)
            if timer is not None:
                timer.cancel()
        elif request_id not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[request_id] = loop.call_later(grace_s, self._expire, request_id)

    def _expire(self, request_id: str) -> None:
        self._timers.pop(request_id, None)
        if request_id in self._counts and self._live(request_id) <= 0:
            self._abandon(request_id)

    def _remember(self, request_id: str, node: str | None, delta: int, grace_s: float) -> None:
        now = time.monotonic()
        self._early = {r: e for r, e in self._early.items() if now - e.at < _EARLY_TTL_S}
        self._early.setdefault(request_id, _Early(now)).changes.append((node, delta, grace_s))
