"""OffsetTracker: commit only past requests that have finished, per partition."""

from aiokafka import TopicPartition

from services.inference.offsets import OffsetTracker

P0 = TopicPartition("llm.requests", 0)
P1 = TopicPartition("llm.requests", 1)


def _tracker(tp: TopicPartition, *offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.begin(tp, offset)
    return tracker


class TestContiguousPrefix:
    def test_out_of_order_finishes_commit_only_the_finished_prefix(self) -> None:
        tracker = _tracker(P0, 5, 6, 7)
        assert tracker.finish(P0, 7) is None  # 5 and 6 still run: committing 8 would lose them
        assert tracker.finish(P0, 5) == 6
        assert tracker.finish(P0, 6) == 8  # past everything seen

    def test_in_order_finishes_commit_one_past_each(self) -> None:
        tracker = _tracker(P0, 0, 1, 2)
        assert [tracker.finish(P0, o) for o in (0, 1, 2)] == [1, 2, 3]

    def test_a_single_request_commits_one_past_its_offset(self) -> None:
        assert _tracker(P0, 41).finish(P0, 41) == 42

    def test_commit_never_moves_backwards_or_repeats(self) -> None:
        tracker = _tracker(P0, 3)
        assert tracker.finish(P0, 3) == 4
        assert tracker.finish(P0, 3) is None  # finishing again changes nothing

    def test_a_request_begun_later_holds_the_commit_back(self) -> None:
        tracker = _tracker(P0, 10, 11)
        assert tracker.finish(P0, 10) == 11
        tracker.begin(P0, 12)
        assert tracker.finish(P0, 11) == 12
        assert tracker.finish(P0, 12) == 13

    def test_inflight_count(self) -> None:
        tracker = _tracker(P0, 1, 2)
        tracker.begin(P1, 7)
        assert tracker.inflight_count() == 3
        tracker.finish(P0, 2)
        assert tracker.inflight_count() == 2


class TestPartitions:
    def test_partitions_are_independent(self) -> None:
        tracker = _tracker(P0, 5, 6)
        tracker.begin(P1, 100)
        assert tracker.finish(P1, 100) == 101  # P0's running requests do not hold P1 back
        assert tracker.finish(P0, 6) is None
        assert tracker.finish(P0, 5) == 7

    def test_finishing_on_an_unknown_partition_commits_nothing(self) -> None:
        assert _tracker(P0, 1).finish(P1, 1) is None


class TestForget:
    def test_forgotten_partitions_lose_their_state(self) -> None:
        tracker = _tracker(P0, 5, 6)
        tracker.begin(P1, 9)
        tracker.forget({P0})
        assert tracker.inflight_count() == 1
        assert tracker.finish(P0, 5) is None  # revoked: its new owner commits it
        assert tracker.finish(P1, 9) == 10

    def test_a_reassigned_partition_starts_over(self) -> None:
        tracker = _tracker(P0, 5)
        assert tracker.finish(P0, 5) == 6
        tracker.forget({P0})
        tracker.begin(P0, 3)  # the new assignment may begin below the old commit
        assert tracker.finish(P0, 3) == 4
