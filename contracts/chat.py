"""ChatRequested: what the gateway asks the inference workers to generate."""

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from contracts.base import Event


class Message(BaseModel):
    """One chat message in OpenAI's shape; content may be text or a list of parts."""

    model_config = ConfigDict(frozen=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(
        description="Who wrote the message"
    )
    content: str | list[dict[str, JsonValue]] | None = Field(
        default=None, description="Text, or OpenAI content parts"
    )
    name: str | None = Field(default=None, description="Optional author name")


class ChatRequested(Event):
    """A validated chat request, published to `llm.requests` keyed by `request_id`."""

    type: Literal["chat_requested"] = "chat_requested"
    tenant_id: str = Field(description="Tenant that asked (from its API key)")
    model: str = Field(description="`auto`, a tier name, or a concrete model name")
    messages: tuple[Message, ...] = Field(min_length=1, description="The conversation")
    params: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="The client's generation parameters (temperature, max_tokens, stop, ...),"
        " passed to the backend unchanged",
    )
    stream: bool = Field(default=True, description="Whether the client asked for a stream")
    include_usage: bool = Field(
        default=False, description="stream_options.include_usage: end the stream with usage"
    )
    reply_partition: int = Field(ge=0, description="Partition of `llm.tokens` to answer on")
    api: Literal["chat", "responses"] = Field(
        default="chat", description="The HTTP API that asked: chat completions or Responses"
    )
    node: str | None = Field(
        default=None,
        max_length=128,
        description="The gateway node the asker is on: if it dies, the asker counts as gone",
    )
    summarised_turns: int = Field(
        default=0, ge=0, description="Conversation turns folded into a summary for this request"
    )
    deadline: AwareDatetime | None = Field(
        default=None, description="Give up (failed: deadline_exceeded) after this time"
    )

    def backend_params(self) -> dict[str, Any]:
        """Generation parameters to hand to the OpenAI SDK call."""
        return dict(self.params)
