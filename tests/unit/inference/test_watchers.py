"""Watchers: the grace-period cancel, per gateway node, with nodes that die silently."""

import asyncio

import pytest

from services.inference.watchers import Watchers

GRACE_S = 0.05
SILENCE_S = 0.1


class _Abandoned:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.event = asyncio.Event()

    def __call__(self, request_id: str) -> None:
        self.ids.append(request_id)
        self.event.set()

    async def wait(self, within: float = 2.0) -> None:
        await asyncio.wait_for(self.event.wait(), within)


async def _quiet_for(seconds: float) -> None:
    """Let timers of up to `seconds` run out (the assertion is that nothing fired)."""
    await asyncio.sleep(seconds)


async def _beat(watchers: Watchers, node: str, grace_s: float) -> None:
    """A live node: says so four times per silence period, until cancelled."""
    while True:
        watchers.alive(node, grace_s)
        await asyncio.sleep(SILENCE_S / 4)


@pytest.fixture
def abandoned() -> _Abandoned:
    return _Abandoned()


class TestOneNode:
    async def test_the_asker_leaving_starts_the_grace_and_then_the_cancel(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=60)
        watchers.track("r1", "a")
        watchers.detach("r1", GRACE_S, "a")
        await abandoned.wait()
        assert abandoned.ids == ["r1"]

    async def test_a_watcher_back_within_the_grace_stops_the_cancel(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=60)
        watchers.track("r1", "a")
        watchers.detach("r1", GRACE_S, "a")
        watchers.attach("r1", "b")
        await _quiet_for(GRACE_S * 4)
        assert abandoned.ids == []

    async def test_events_that_overtake_their_request_still_count(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=60)
        watchers.detach("r1", GRACE_S, "a")  # before the worker saw the request
        watchers.track("r1", "a")
        await abandoned.wait()
        assert abandoned.ids == ["r1"]

    async def test_a_finished_request_is_never_cancelled(self, abandoned: _Abandoned) -> None:
        watchers = Watchers(abandoned, silence_s=60)
        watchers.track("r1", "a")
        watchers.detach("r1", GRACE_S, "a")
        watchers.untrack("r1")
        await _quiet_for(GRACE_S * 4)
        assert abandoned.ids == []


class TestSilentNodes:
    async def test_a_node_that_goes_silent_counts_as_its_clients_leaving(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=SILENCE_S)
        watchers.alive("a", GRACE_S)
        watchers.track("r1", "a")
        await abandoned.wait()  # no goodbye from "a": silence, then its grace, then the cancel
        assert abandoned.ids == ["r1"]

    async def test_a_node_that_keeps_saying_alive_keeps_its_clients(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=SILENCE_S)
        watchers.track("r1", "a")
        beating = asyncio.create_task(_beat(watchers, "a", GRACE_S))
        try:
            await _quiet_for(SILENCE_S * 5)
        finally:
            beating.cancel()
        assert abandoned.ids == []

    async def test_a_client_resumed_on_another_node_outlives_the_dead_one(
        self, abandoned: _Abandoned
    ) -> None:
        watchers = Watchers(abandoned, silence_s=SILENCE_S)
        watchers.alive("a", GRACE_S)
        watchers.track("r1", "a")  # then "a" dies without a word
        watchers.track("r2", "a")
        beating = asyncio.create_task(_beat(watchers, "b", GRACE_S))
        watchers.attach("r1", "b")  # r1's client came back on "b"; r2's never did
        try:
            await abandoned.wait()
            await _quiet_for(GRACE_S * 4)
        finally:
            beating.cancel()
        assert abandoned.ids == ["r2"]

    async def test_a_node_heard_again_within_the_grace_keeps_its_clients(
        self, abandoned: _Abandoned
    ) -> None:
        """The broker, not the node, was away: the node's watchers count again."""
        watchers = Watchers(abandoned, silence_s=SILENCE_S)
        watchers.alive("a", 0.5)
        watchers.track("r1", "a")
        await _quiet_for(SILENCE_S * 2)  # lost: its grace of 0.5 s runs
        beating = asyncio.create_task(_beat(watchers, "a", 0.5))
        try:
            await _quiet_for(1.0)
        finally:
            beating.cancel()
        assert abandoned.ids == []
