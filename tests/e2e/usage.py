"""Read UsageRecorded events from a usage topic, for assertions."""

from collections.abc import Sequence

from contracts import UsageRecorded
from tests.kafka_records import Record, read_topic


async def usage_of(
    bootstrap: str, topic: str, request_id: str, within: float = 20.0
) -> UsageRecorded:
    """The usage record of `request_id` (read from the topic's start), or fail in `within` s."""

    def of_request(records: Sequence[Record]) -> list[UsageRecorded]:
        usages = (UsageRecorded.model_validate_json(r.value) for r in records)
        return [usage for usage in usages if usage.request_id == request_id]

    records = await read_topic(
        bootstrap, topic, until=lambda records: bool(of_request(records)), timeout_s=within
    )
    return of_request(records)[0]
