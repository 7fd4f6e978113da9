"""Request ids that say where a request's events live: reply partition and creation time.

Any gateway node can then resume a stream from Kafka alone (`offsets_for_times`), with no
second store.
"""

import re
import secrets
import time
from dataclasses import dataclass

_PATTERN = re.compile(r"chatcmpl-([0-9a-f]{1,12})-([0-9]{1,4})-([0-9a-f]{16})")


@dataclass(frozen=True, slots=True)
class RequestRef:
    """What a request id encodes."""

    created_ms: int
    partition: int

    def age_ms(self) -> int:
        return int(time.time() * 1000) - self.created_ms


def new_request_id(partition: int, created_ms: int) -> str:
    """`chatcmpl-<ms hex>-<partition>-<random>`; OpenAI clients see it as the completion id."""
    return f"chatcmpl-{created_ms:x}-{partition}-{secrets.token_hex(8)}"


def parse_request_id(request_id: str) -> RequestRef | None:
    """The partition and time a request id encodes, or None if it is not one of ours."""
    match = _PATTERN.fullmatch(request_id)
    if match is None:
        return None
    return RequestRef(created_ms=int(match.group(1), 16), partition=int(match.group(2)))
