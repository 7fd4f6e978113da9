"""Coalescer: tokens within a window become one emit; nothing is lost, doubled or reordered."""

import asyncio

import pytest

from services.inference.coalesce import Coalescer

WINDOW = 0.02
WAIT = 2.0  # generous upper bound for a condition that should hold within a window or two


class Recorder:
    """The emit callback: records each piece and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self._emitted = asyncio.Event()

    async def __call__(self, text: str) -> None:
        self.pieces.append(text)
        self._emitted.set()

    async def next_emit(self) -> None:
        async with asyncio.timeout(WAIT):
            await self._emitted.wait()
        self._emitted.clear()


class TestNoWindow:
    async def test_each_token_is_emitted_immediately(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(0, rec)
        await coalescer.add("Hel")
        assert rec.pieces == ["Hel"]
        await coalescer.add("lo")
        assert rec.pieces == ["Hel", "lo"]

    async def test_flush_has_nothing_to_add(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(0, rec)
        await coalescer.add("a")
        await coalescer.flush()
        assert rec.pieces == ["a"]


FIRST = "<first>"


async def _past_first(emit) -> Coalescer:  # type: ignore[no-untyped-def]
    """A coalescer whose first token (always sent at once) is out, so windows apply."""
    coalescer = Coalescer(WINDOW, emit)
    await coalescer.add(FIRST)
    if isinstance(emit, Recorder):
        emit.pieces.clear()
        await emit.next_emit()
    return coalescer


class TestFirstToken:
    async def test_the_first_token_is_never_held_back(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(WINDOW, rec)
        await coalescer.add("Hi")
        assert rec.pieces == ["Hi"]  # at once, not after the window
        await coalescer.add(" there")
        assert rec.pieces == ["Hi"]  # later tokens wait for their window
        await coalescer.flush()
        assert rec.pieces == ["Hi", " there"]


class TestWindow:
    async def test_tokens_within_the_window_become_one_emit(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        for token in ["The", " quick", " fox"]:
            await coalescer.add(token)
        assert rec.pieces == []  # held until the window ends
        await rec.next_emit()
        assert rec.pieces == ["The quick fox"]

    async def test_flush_emits_the_rest_at_once(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add("x")
        await coalescer.add("y")
        await coalescer.flush()
        assert rec.pieces == ["xy"]

    async def test_flush_cancels_the_pending_timer(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add("x")
        await coalescer.flush()
        await rec.next_emit()  # the flush's own emit
        with pytest.raises(TimeoutError):  # no second, empty or repeated emit when the window ends
            await asyncio.wait_for(rec.next_emit(), timeout=5 * WINDOW)
        assert rec.pieces == ["x"]

    async def test_flush_with_nothing_buffered_emits_nothing(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add("a")
        await rec.next_emit()
        await coalescer.flush()
        assert rec.pieces == ["a"]

    async def test_later_windows_start_with_their_first_token(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add("a")
        await coalescer.add("b")
        await rec.next_emit()
        await coalescer.add("c")
        await rec.next_emit()
        await coalescer.add("d")
        await coalescer.flush()
        assert rec.pieces == ["ab", "c", "d"]

    async def test_a_long_stream_keeps_every_character_once_and_in_order(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        tokens = [f" t{i}" for i in range(60)] + ["", ' ü\n"end"']
        for i, token in enumerate(tokens):
            await coalescer.add(token)
            if i % 10 == 9:
                await rec.next_emit()  # let a window close mid-stream
        await coalescer.flush()
        assert "".join(rec.pieces) == "".join(tokens)
        assert 6 <= len(rec.pieces) < len(tokens)


class TestSlowEmit:
    """Emitting may suspend (a full producer buffer); pieces must still go out one at a time."""

    async def test_emits_never_overlap(self) -> None:
        pieces: list[str] = []
        gate, first_started, second_started = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def slow_emit(text: str) -> None:
            if text == FIRST:
                return
            pieces.append(text)
            if len(pieces) == 1:
                first_started.set()
                await gate.wait()
            else:
                second_started.set()

        coalescer = await _past_first(slow_emit)
        await coalescer.add("a")
        await asyncio.wait_for(first_started.wait(), WAIT)
        await coalescer.add("b")
        with pytest.raises(TimeoutError):  # "b" waits for "a" to be out, however many windows pass
            await asyncio.wait_for(second_started.wait(), timeout=5 * WINDOW)
        gate.set()
        await coalescer.flush()
        assert pieces == ["a", "b"]

    async def test_an_emit_error_surfaces_at_flush(self) -> None:
        failing, gate = asyncio.Event(), asyncio.Event()
        pieces: list[str] = []

        async def emit(text: str) -> None:
            if text == FIRST:
                return
            pieces.append(text)
            if len(pieces) == 1:
                failing.set()
                await gate.wait()
                raise ConnectionError("broker gone")

        coalescer = await _past_first(emit)
        await coalescer.add("a")
        await asyncio.wait_for(failing.wait(), WAIT)
        await coalescer.add("b")
        # Not a synchronisation: time must pass so that b's window ends while "a" is being sent.
        await asyncio.sleep(5 * WINDOW)
        gate.set()
        with pytest.raises(ConnectionError):  # never a silently truncated answer
            await coalescer.flush()
