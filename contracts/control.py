"""Control events on `llm.control`, read by every worker; the one holding the request acts."""

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from contracts.base import Event


class CancelRequested(Event):
    """Stop generating `request_id` and finish it with `finish_reason="cancelled"`."""

    type: Literal["cancel_requested"] = "cancel_requested"
    reason: str = Field(default="client", description="client | no_worker | ...")


_NODE = Field(
    default=None, max_length=128, description="The gateway node the client is on (None: unknown)"
)


class ClientAttached(Event):
    """A client started watching the request (a resume, a second device), on any node."""

    type: Literal["client_attached"] = "client_attached"
    node: str | None = _NODE


class ClientDetached(Event):
    """A client stopped watching before the end; with no watcher left after `grace_s`,
    the worker cancels the generation (the client may still come back and resume)."""

    type: Literal["client_detached"] = "client_detached"
    grace_s: float = Field(ge=0, description="How long to keep generating for a return")
    node: str | None = _NODE


class GatewayAlive(Event):
    """A gateway node is up; said every few seconds. A node silent for the workers'
    `gateway_silence_s` is gone (it died): its clients count as detached with its `grace_s`.
    A restarted process is a new node, so a dead node never speaks again."""

    type: Literal["gateway_alive"] = "gateway_alive"
    request_id: str = Field(
        min_length=1, max_length=128, description="The node's id (control events are keyed by it)"
    )
    grace_s: float = Field(ge=0, description="The node's disconnect grace period")

    @property
    def node(self) -> str:
        return self.request_id


ControlEvent = Annotated[
    CancelRequested | ClientAttached | ClientDetached | GatewayAlive, Field(discriminator="type")
]
CONTROL_EVENT: TypeAdapter[ControlEvent] = TypeAdapter(ControlEvent)
