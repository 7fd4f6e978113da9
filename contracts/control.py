"""Control events on `llm.control`, read by every worker; the one holding the request acts."""

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from contracts.base import Event


class CancelRequested(Event):
    """Stop generating `request_id` and finish it with `finish_reason="cancelled"`."""

    type: Literal["cancel_requested"] = "cancel_requested"
    reason: str = Field(default="client", description="client | no_worker | ...")


class ClientAttached(Event):
    """A client started watching the request (a resume, a second device), on any node."""

    type: Literal["client_attached"] = "client_attached"


class ClientDetached(Event):
    """A client stopped watching before the end; with no watcher left after `grace_s`,
    the worker cancels the generation (the client may still come back and resume)."""

    type: Literal["client_detached"] = "client_detached"
    grace_s: float = Field(ge=0, description="How long to keep generating for a return")


ControlEvent = Annotated[
    CancelRequested | ClientAttached | ClientDetached, Field(discriminator="type")
]
CONTROL_EVENT: TypeAdapter[ControlEvent] = TypeAdapter(ControlEvent)
