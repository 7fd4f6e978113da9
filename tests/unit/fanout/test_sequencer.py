"""Sequencer: one ordered, duplicate-free stream per request, whatever the partition holds."""

from contracts import ErrorCode, Failed, StreamEvent
from services.fanout.sequencer import Sequencer

from .events import Attempt


def _feed(sequencer: Sequencer, events: list[StreamEvent]) -> list[StreamEvent]:
    delivered = [sequencer.accept(event) for event in events]
    return [event for event in delivered if event is not None]


class TestOrderedDelivery:
    def test_a_clean_stream_is_delivered_unchanged(self) -> None:
        events = Attempt("a").stream("Hel", "lo", "!")
        assert _feed(Sequencer(), events) == events

    def test_terminal_event_ends_the_stream(self) -> None:
        a = Attempt("a")
        sequencer = Sequencer()
        _feed(sequencer, [a.started(), a.completed()])
        assert sequencer.done
        assert _feed(sequencer, [a.delta("late")]) == []

    def test_failed_ends_the_stream(self) -> None:
        a = Attempt("a")
        sequencer = Sequencer()
        delivered = _feed(sequencer, [a.started(), a.failed(), a.delta("late")])
        assert [e.type for e in delivered] == ["started", "failed"]
        assert sequencer.done

    def test_events_before_any_started_are_dropped(self) -> None:
        a = Attempt("a")
        started, delta = a.started(), a.delta("x")
        assert _feed(Sequencer(), [delta, started]) == [started]


class TestDuplicates:
    def test_a_redelivered_event_is_dropped(self) -> None:
        a = Attempt("a")
        started, first, second = a.started(), a.delta("a"), a.delta("b")
        delivered = _feed(Sequencer(), [started, first, first, second, first, started])
        assert delivered == [started, first, second]

    def test_duplicates_after_the_end_are_dropped(self) -> None:
        events = Attempt("a").stream("x")
        assert _feed(Sequencer(), events + events) == events


class TestSilentTakeover:
    """A worker that died before its first token is replaced without the client noticing."""

    def test_new_attempt_before_text_continues_the_stream(self) -> None:
        old, new = Attempt("old"), Attempt("new")
        old_started = old.started()
        new_events = new.stream("fresh", " text")
        delivered = _feed(Sequencer(), [old_started, *new_events])
        assert delivered == [old_started, *new_events[1:]]  # the second `started` is invisible

    def test_the_old_attempt_is_ignored_after_takeover(self) -> None:
        old, new = Attempt("old"), Attempt("new")
        sequencer = Sequencer()
        _feed(sequencer, [old.started(), new.started()])
        zombie = old.delta("stale")
        fresh = new.delta("fresh")
        done = new.completed()
        assert _feed(sequencer, [zombie, fresh, old.completed(), done]) == [fresh, done]
        assert sequencer.done

    def test_takeover_can_happen_twice(self) -> None:
        first, second, third = Attempt("1"), Attempt("2"), Attempt("3")
        head = first.started()
        tail = third.stream("ok")[1:]
        delivered = _feed(Sequencer(), [head, second.started(), third.started(), *tail])
        assert delivered == [head, *tail]


class TestWorkerLostAfterText:
    """Splicing a second answer onto text already shown would be silently wrong."""

    def test_a_new_attempt_after_text_yields_one_retryable_failed(self) -> None:
        old, new = Attempt("old"), Attempt("new")
        sequencer = Sequencer()
        shown = _feed(sequencer, [old.started(), old.delta("Hello")])
        synthetic = sequencer.accept(new.started())
        assert len(shown) == 2
        assert isinstance(synthetic, Failed)
        assert synthetic.code is ErrorCode.WORKER_LOST
        assert synthetic.retryable is True
        assert synthetic.request_id == old.request_id
        assert synthetic.seq == 2  # continues the numbering the client has seen
        assert sequencer.done

    def test_nothing_is_delivered_after_worker_lost(self) -> None:
        old, new = Attempt("old"), Attempt("new")
        sequencer = Sequencer()
        _feed(sequencer, [old.started(), old.delta("Hello"), new.started()])
        later = [new.delta("Other"), new.completed(), old.delta(" world"), old.completed()]
        assert _feed(sequencer, later) == []
