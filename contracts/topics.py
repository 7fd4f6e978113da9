"""The topic registry: every Kafka topic's name, key, partitions and value model, once."""

from dataclasses import dataclass

from contracts.chat import ChatRequested
from contracts.control import ControlEvent
from contracts.dead_letter import DeadLetter
from contracts.rooms import RoomEvent
from contracts.stream import StreamEvent
from contracts.usage import UsageRecorded


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: `name` as deployed (with any prefix), and how it is keyed and sized."""

    name: str
    key: str
    partitions: int
    value: object  # a model class, or the StreamEvent discriminated union
    retention_ms: int | None = None

    def prefixed(self, prefix: str) -> "Topic":
        return Topic(prefix + self.name, self.key, self.partitions, self.value, self.retention_ms)


_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Topics:
    """All topics; `with_prefix` gives an isolated copy (tests, multi-tenant clusters)."""

    requests: Topic = Topic("llm.requests", "request_id", 12, ChatRequested)
    tokens: Topic = Topic("llm.tokens", "request_id", 4, StreamEvent, retention_ms=24 * _HOUR_MS)
    control: Topic = Topic("llm.control", "request_id", 1, ControlEvent, retention_ms=_HOUR_MS)
    usage: Topic = Topic("llm.usage", "tenant_id", 6, UsageRecorded)
    # Every gateway reads all of it; a room's recent events rebuild its presence on a node
    # that starts, and a member coming back reads what it missed (docs/rooms.md).
    rooms: Topic = Topic("llm.rooms", "room_id", 4, RoomEvent, retention_ms=24 * _HOUR_MS)
    requests_dlq: Topic = Topic("llm.requests.dlq", "request_id", 1, DeadLetter)
    tokens_dlq: Topic = Topic("llm.tokens.dlq", "request_id", 1, DeadLetter)
    usage_dlq: Topic = Topic("llm.usage.dlq", "tenant_id", 1, DeadLetter)

    def with_prefix(self, prefix: str) -> "Topics":
        if not prefix:
            return self
        return Topics(**{name: topic.prefixed(prefix) for name, topic in self.items()})

    def items(self) -> list[tuple[str, Topic]]:
        return [(name, getattr(self, name)) for name in self.__dataclass_fields__]

    def all(self) -> list[Topic]:
        return [topic for _, topic in self.items()]


TOPICS = Topics()

# The benchmark's own topic, for the floor of one Kafka hop (produce -> fetch) on the machine;
# no service reads or writes it, and it is created only by the benchmark.
HOP_PROBE = Topic("bench.hop", "none", 1, bytes, retention_ms=_HOUR_MS)
