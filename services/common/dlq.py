"""publish_dead_letter(): the one way a message a consumer cannot accept leaves it."""

from collections.abc import Awaitable, Callable
from typing import Any

from contracts import DeadLetter

PublishFn = Callable[..., Awaitable[Any]]


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="backslashreplace")


async def publish_dead_letter(
    publish: PublishFn,
    dlq_topic: str,
    *,
    value: bytes,
    key: bytes | None,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    reason: str,
    consumer: str,
) -> DeadLetter:
    """Publish `value` with where it came from and why it was refused; return the letter."""
    letter = DeadLetter(
        request_id=_text(key) or "unknown",
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        key=_text(key),
        value=_text(value) or "",
        reason=reason[:2000],
        consumer=consumer,
    )
    await publish(letter, topic=dlq_topic, key=key)
    return letter


async def dead_letter_record(
    publish: PublishFn, dlq_topic: str, record: Any, reason: str, consumer: str
) -> DeadLetter:
    """`publish_dead_letter` for an aiokafka ConsumerRecord read outside FastStream."""
    return await publish_dead_letter(
        publish,
        dlq_topic,
        value=record.value or b"",
        key=record.key,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        reason=reason,
        consumer=consumer,
    )
