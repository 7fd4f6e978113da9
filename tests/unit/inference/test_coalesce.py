"""Coalescer: tokens within a window become one emit; nothing is lost, doubled or reordered."""

import asyncio
import functools

import pytest

from services.inference.coalesce import Coalescer, Piece, Window

WINDOW = 0.02
WAIT = 2.0  # generous upper bound for a condition that should hold within a window or two


def _text(text: str) -> Piece:
    return Piece("content", text)


class Recorder:
    """The emit callback: records each piece and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.pieces: list[str] = []  # the text of each emit
        self.emitted: list[Piece] = []
        self._emitted = asyncio.Event()

    async def __call__(self, piece: Piece) -> None:
        self.pieces.append(piece.text)
        self.emitted.append(piece)
        self._emitted.set()

    async def next_emit(self) -> None:
        async with asyncio.timeout(WAIT):
            await self._emitted.wait()
        self._emitted.clear()


class TestNoWindow:
    async def test_each_token_is_emitted_immediately(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(0, rec)
        await coalescer.add(_text("Hel"))
        assert rec.pieces == ["Hel"]
        await coalescer.add(_text("lo"))
        assert rec.pieces == ["Hel", "lo"]

    async def test_flush_has_nothing_to_add(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(0, rec)
        await coalescer.add(_text("a"))
        await coalescer.flush()
        assert rec.pieces == ["a"]


FIRST = "<first>"


async def _past_first(emit) -> Coalescer:  # type: ignore[no-untyped-def]
    """A coalescer whose first token (always sent at once) is out, so windows apply."""
    coalescer = Coalescer(WINDOW, emit)
    await coalescer.add(_text(FIRST))
    if isinstance(emit, Recorder):
        emit.pieces.clear()
        await emit.next_emit()
    return coalescer


class TestFirstToken:
    async def test_the_first_token_is_never_held_back(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(WINDOW, rec)
        await coalescer.add(_text("Hi"))
        assert rec.pieces == ["Hi"]  # at once, not after the window
        await coalescer.add(_text(" there"))
        assert rec.pieces == ["Hi"]  # later tokens wait for their window
        await coalescer.flush()
        assert rec.pieces == ["Hi", " there"]


class TestWindow:
    async def test_tokens_within_the_window_become_one_emit(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        for token in ["The", " quick", " fox"]:
            await coalescer.add(_text(token))
        assert rec.pieces == []  # held until the window ends
        await rec.next_emit()
        assert rec.pieces == ["The quick fox"]

    async def test_flush_emits_the_rest_at_once(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add(_text("x"))
        await coalescer.add(_text("y"))
        await coalescer.flush()
        assert rec.pieces == ["xy"]

    async def test_flush_cancels_the_pending_timer(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add(_text("x"))
        await coalescer.flush()
        await rec.next_emit()  # the flush's own emit
        with pytest.raises(TimeoutError):  # no second, empty or repeated emit when the window ends
            await asyncio.wait_for(rec.next_emit(), timeout=5 * WINDOW)
        assert rec.pieces == ["x"]

    async def test_flush_with_nothing_buffered_emits_nothing(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add(_text("a"))
        await rec.next_emit()
        await coalescer.flush()
        assert rec.pieces == ["a"]

    async def test_later_windows_start_with_their_first_token(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        await coalescer.add(_text("a"))
        await coalescer.add(_text("b"))
        await rec.next_emit()
        await coalescer.add(_text("c"))
        await rec.next_emit()
        await coalescer.add(_text("d"))
        await coalescer.flush()
        assert rec.pieces == ["ab", "c", "d"]

    async def test_a_long_stream_keeps_every_character_once_and_in_order(self) -> None:
        rec = Recorder()
        coalescer = await _past_first(rec)
        tokens = [f" t{i}" for i in range(60)] + ["", ' ü\n"end"']
        for i, token in enumerate(tokens):
            await coalescer.add(_text(token))
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

        async def slow_emit(piece: Piece) -> None:
            text = piece.text
            if text == FIRST:
                return
            pieces.append(text)
            if len(pieces) == 1:
                first_started.set()
                await gate.wait()
            else:
                second_started.set()

        coalescer = await _past_first(slow_emit)
        await coalescer.add(_text("a"))
        await asyncio.wait_for(first_started.wait(), WAIT)
        await coalescer.add(_text("b"))
        with pytest.raises(TimeoutError):  # "b" waits for "a" to be out, however many windows pass
            await asyncio.wait_for(second_started.wait(), timeout=5 * WINDOW)
        gate.set()
        await coalescer.flush()
        assert pieces == ["a", "b"]

    async def test_an_emit_error_surfaces_at_flush(self) -> None:
        failing, gate = asyncio.Event(), asyncio.Event()
        pieces: list[str] = []

        async def emit(piece: Piece) -> None:
            text = piece.text
            if text == FIRST:
                return
            pieces.append(text)
            if len(pieces) == 1:
                failing.set()
                await gate.wait()
                raise ConnectionError("broker gone")

        coalescer = await _past_first(emit)
        await coalescer.add(_text("a"))
        await asyncio.wait_for(failing.wait(), WAIT)
        await coalescer.add(_text("b"))
        # Not a synchronisation: time must pass so that b's window ends while "a" is being sent.
        await asyncio.sleep(5 * WINDOW)
        gate.set()
        with pytest.raises(ConnectionError):  # never a silently truncated answer
            await coalescer.flush()


def _mixed() -> list[Piece]:
    """Reasoning, text, then two parallel tool calls, as a backend streams them."""
    return [
        Piece("reasoning", "Let "),
        Piece("reasoning", "me think."),
        Piece("content", "Checking"),
        Piece("content", " both."),
        Piece("tool", "", 0, "call_a", "weather"),
        Piece("tool", '{"city":', 0),
        Piece("tool", '"Oslo"}', 0),
        Piece("tool", "", 1, "call_b", "time"),
        Piece("tool", '{"tz":', 1),
        Piece("tool", '"CET"}', 1),
        Piece("refusal", "No"),
        Piece("refusal", " more."),
    ]


def _shape(pieces: list[Piece]) -> list[tuple[str, int, str | None, str | None, str]]:
    return [(p.kind, p.index, p.id, p.name, p.text) for p in pieces]


class TestKinds:
    async def test_without_a_window_every_piece_goes_out_as_it_came(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(0, rec)
        for piece in _mixed():
            await coalescer.add(piece)
        await coalescer.flush()
        assert _shape(rec.emitted) == _shape(_mixed())

    @pytest.mark.parametrize("window", [0.01, 60.0])
    async def test_runs_of_one_kind_merge_and_a_new_kind_or_call_index_splits(
        self, window: float
    ) -> None:
        # 60 s: everything is buffered until the flush, so only the merge rules decide; 10 ms:
        # a window may also close mid-stream, which may split a run but never reorders.
        rec = Recorder()
        coalescer = Coalescer(window, rec)
        for piece in _mixed():
            await coalescer.add(piece)
        await coalescer.flush()
        merged = [
            ("reasoning", 0, None, None, "Let "),  # the first piece always goes out alone
            ("reasoning", 0, None, None, "me think."),
            ("content", 0, None, None, "Checking both."),
            ("tool", 0, "call_a", "weather", '{"city":"Oslo"}'),
            ("tool", 1, "call_b", "time", '{"tz":"CET"}'),
            ("refusal", 0, None, None, "No more."),
        ]
        if window == 60.0:
            assert _shape(rec.emitted) == merged
        # Whatever the timing: the same kinds in the same order, and nothing lost.
        assert _collapse(rec.emitted) == _collapse(_mixed())
        assert _joined(rec.emitted) == _joined(_mixed())

    async def test_a_continuation_never_merges_into_another_call(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(60.0, rec)
        await coalescer.add(Piece("content", "x"))  # the first, out at once
        for piece in [
            Piece("tool", "", 0, "a", "f"),
            Piece("tool", "", 1, "b", "g"),
            Piece("tool", "1", 0),  # back to call 0: a new piece, after call 1's
        ]:
            await coalescer.add(piece)
        await coalescer.flush()
        assert [(p.index, p.id, p.text) for p in rec.emitted[1:]] == [
            (0, "a", ""),
            (1, "b", ""),
            (0, None, "1"),
        ]

    async def test_logprobs_of_merged_text_are_concatenated_in_order(self) -> None:
        rec = Recorder()
        coalescer = Coalescer(60.0, rec)
        await coalescer.add(Piece("content", "<first>"))
        await coalescer.add(Piece("content", "a", logprobs=[{"token": "a"}]))
        await coalescer.add(Piece("content", "b", logprobs=[{"token": "b"}]))
        await coalescer.flush()
        assert rec.emitted[-1].text == "ab"
        assert rec.emitted[-1].logprobs == [{"token": "a"}, {"token": "b"}]


def _collapse(pieces: list[Piece]) -> list[tuple[str, int]]:
    """Adjacent emits of the same kind and call index, as one (a window may split a run)."""
    runs: list[tuple[str, int]] = []
    for piece in pieces:
        key = (piece.kind, piece.index)
        if not runs or runs[-1] != key or piece.id is not None:
            runs.append(key)
    return runs


def _joined(pieces: list[Piece]) -> dict[tuple[str, int], str]:
    texts: dict[tuple[str, int], str] = {}
    for piece in pieces:
        texts[(piece.kind, piece.index)] = texts.get((piece.kind, piece.index), "") + piece.text
    return texts


def test_window_grows_with_load_from_idle_to_busy() -> None:
    window = Window(0.010, 0.050, busy_at=32)
    assert window.at(0) == window.at(1) == 0.010  # a lone stream keeps the short window
    assert window.at(17) == pytest.approx(0.030)  # half-way: 16 of 32 others
    assert window.at(33) == window.at(500) == pytest.approx(0.050)  # capped at busy


def test_window_zero_stays_off_at_any_load_and_busy_below_idle_is_idle() -> None:
    assert Window(0.0, 0.050, busy_at=1).at(100) == 0.0  # 0 = one delta per token, always
    assert Window(0.025, 0.010, busy_at=4).at(100) == 0.025


async def test_a_busy_worker_merges_more_pieces_per_emit() -> None:
    """The window is read when it opens: the same pieces at the same pace merge into fewer
    emits when the load function says the worker is busy."""
    for load, emits in ((1, ["a", "b", "c", "d", "e"]), (40, ["a", "bcde"])):
        rec = Recorder()
        coalescer = Coalescer(functools.partial(Window(0.001, 0.200, busy_at=8).at, load), rec)
        for text in ("a", "b", "c", "d", "e"):
            await coalescer.add(Piece("content", text))
            await asyncio.sleep(0.005)
        await coalescer.flush()
        assert rec.pieces == emits  # the first piece always goes out alone, at once
