"""CancelRequested: broadcast to every worker; the one holding the request stops it."""

from typing import Literal

from pydantic import Field

from contracts.base import Event


class CancelRequested(Event):
    """Stop generating `request_id` and finish it with `finish_reason="cancelled"`."""

    type: Literal["cancel_requested"] = "cancel_requested"
    reason: str = Field(default="client", description="client | disconnect_grace | ...")
