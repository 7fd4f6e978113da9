"""OpenAI's chat-completions HTTP shapes: the request model and chunk/response builders."""

import json
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from contracts import Delta, Message, TokenUsage, ToolCallPiece

_COMPACT = (",", ":")  # OpenAI's streams carry compact JSON
# Fields the gateway acts on itself; every other field the client sent is passed through.
OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The request body; unknown fields are kept and forwarded, as OpenAI accepts them."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice is supported")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def passthrough_params(self) -> dict[str, Any]:
        sent = self.model_dump(mode="json", exclude_unset=True)
        return {k: v for k, v in sent.items() if k not in OWN_FIELDS}


class ChunkFormatter:
    """Builds `chat.completion.chunk` JSON by string concatenation: this runs once per token."""

    __slots__ = ("_prefix", "_suffix")

    def __init__(self, request_id: str, created: int, model: str, include_usage: bool) -> None:
        self._prefix = (
            f'{{"id":{json.dumps(request_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{json.dumps(model)},"system_fingerprint":null,'
            '"choices":['
        )
        self._suffix = '],"usage":null}' if include_usage else "]}"

    def _choice(self, delta: str, finish: str = "null", logprobs: str = "null") -> str:
        return (
            f'{self._prefix}{{"index":0,"delta":{delta},"logprobs":{logprobs},'
            f'"finish_reason":{finish}}}{self._suffix}'
        )

    def role(self) -> str:
        return self._choice('{"role":"assistant","content":""}')

    def content(self, text: str) -> str:
        return self._choice(f'{{"content":{json.dumps(text)}}}')

    def delta(self, event: Delta) -> str:
        """A delta with more than text: tool calls, refusal, reasoning or logprobs."""
        logprobs = "null"
        if event.logprobs is not None:
            logprobs = _dumps({"content": None, "refusal": None, **event.logprobs})
        return self._choice(_dumps(delta_dict(event)), logprobs=logprobs)

    def finish(self, reason: str) -> str:
        return self._choice("{}", json.dumps(reason))

    def usage(self, usage: TokenUsage) -> str:
        return f'{self._prefix}],"usage":{usage_json(usage)}}}'


def usage_json(usage: TokenUsage) -> str:
    return json.dumps(usage_dict(usage), separators=_COMPACT)


def usage_dict(usage: TokenUsage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.prompt_tokens_details is not None:
        body["prompt_tokens_details"] = usage.prompt_tokens_details
    if usage.completion_tokens_details is not None:
        body["completion_tokens_details"] = usage.completion_tokens_details
    return body


def delta_dict(event: Delta) -> dict[str, Any]:
    """A `Delta` event as the `delta` of an OpenAI chunk."""
    delta: dict[str, Any] = {}
    if event.reasoning is not None:
        delta["reasoning_content"] = event.reasoning
    if event.refusal is not None:
        delta["refusal"] = event.refusal
    if event.content:
        delta["content"] = event.content
    if event.tool_calls is not None:
        delta["tool_calls"] = [_tool_call(piece) for piece in event.tool_calls]
    return delta


def _tool_call(piece: ToolCallPiece) -> dict[str, Any]:
    call: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        call["id"] = piece.id
        call["type"] = piece.type or "function"
    function: dict[str, Any] = {"arguments": piece.arguments}
    if piece.name is not None:
        function = {"name": piece.name, **function}
    call["function"] = function
    return call


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=_COMPACT)


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(text: str) -> str:
    """`text` as an HTTP header value: printable ASCII as is, anything else (and `%`)
    percent-encoded, so no model name can break a response or inject a header."""
    return quote(text, safe=_HEADER_SAFE)
