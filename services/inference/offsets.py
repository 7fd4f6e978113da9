"""Commit a partition's offset only past requests that have finished (at-least-once)."""

from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass(slots=True)
class _PartitionState:
    inflight: set[int] = field(default_factory=set)
    next_offset: int = -1  # one past the highest offset seen
    committed: int = -1


class OffsetTracker:
    """Tracks in-flight offsets per partition; `committable` is the lowest unfinished one.

    Requests on one partition finish out of order, so committing "the consumer position"
    (what a plain ack does) would skip requests still running; a crash would then lose them.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}

    def begin(self, tp: TopicPartition, offset: int) -> None:
        state = self._parts.get(tp)
        if state is None:
            # The first offset of an assignment is where the group's position already is:
            # committing it again would be a wasted round trip.
            state = self._parts[tp] = _PartitionState(committed=offset)
        state.inflight.add(offset)
        state.next_offset = max(state.next_offset, offset + 1)

    def finish(self, tp: TopicPartition, offset: int) -> int | None:
        """Mark `offset` done; return the offset to commit now, or None if unchanged."""
        state = self._parts.get(tp)
        if state is None:
            return None
        state.inflight.discard(offset)
        target = min(state.inflight) if state.inflight else state.next_offset
        if target <= state.committed:
            return None
        state.committed = target
        return target

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop state of partitions taken away by a rebalance; their new owner starts over."""
        for tp in partitions:
            self._parts.pop(tp, None)

    def inflight_count(self) -> int:
        return sum(len(s.inflight) for s in self._parts.values())
