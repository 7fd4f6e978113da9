"""DeadLetter: a message a consumer could not accept, kept with where it came from and why."""

from typing import Literal

from pydantic import Field

from contracts.base import Event


class DeadLetter(Event):
    """A poison message, published to `<source>.dlq`; `request_id` is the key or `unknown`."""

    type: Literal["dead_letter"] = "dead_letter"
    source_topic: str = Field(description="Topic the message was read from")
    source_partition: int = Field(description="Its partition")
    source_offset: int = Field(description="Its offset")
    key: str | None = Field(default=None, description="Its key, decoded as UTF-8 with escapes")
    value: str = Field(description="Its value, decoded as UTF-8 with escapes")
    reason: str = Field(description="Why it was refused")
    consumer: str = Field(description="Service that refused it")
