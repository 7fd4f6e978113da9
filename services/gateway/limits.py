"""Input limits of the edge: how much a request may ask for, checked before anything is queued."""

from typing import Any

from pydantic import BaseModel, Field

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.openai_wire import ChatCompletionRequest


class InputLimits(BaseModel):
    """Defaults fit real chat use with room to spare; refusals name the offending field."""

    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Body size (413)")
    max_messages: int = Field(default=500, ge=1, description="Messages in one request")
    max_message_chars: int = Field(default=200_000, ge=1, description="Characters in a message")
    max_total_chars: int = Field(default=800_000, ge=1, description="Characters in all messages")
    max_output_tokens: int = Field(default=32_768, ge=1, description="max_tokens ceiling")
    content_parts: list[str] = Field(
        default=["text", "image_url", "input_audio"], description="Content part types accepted"
    )


def check_input(body: ChatCompletionRequest, limits: InputLimits) -> None:
    """Raise a 400 naming the first field over its limit."""
    if len(body.messages) > limits.max_messages:
        raise _refuse(
            f"at most {limits.max_messages} messages", "messages", EdgeCode.TOO_MANY_MESSAGES
        )
    total = 0
    for i in range(len(body.messages)):
        chars = _chars(body, i, limits)
        if chars > limits.max_message_chars:
            raise _refuse(
                f"a message may hold at most {limits.max_message_chars} characters",
                f"messages.{i}.content",
                EdgeCode.MESSAGE_TOO_LONG,
            )
        total += chars
    if total > limits.max_total_chars:
        raise _refuse(
            f"all messages together may hold at most {limits.max_total_chars} characters",
            "messages",
            EdgeCode.CONTEXT_TOO_LONG,
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name)
        if value is not None and value > limits.max_output_tokens:
            raise _refuse(
                f"'{name}' may be at most {limits.max_output_tokens}",
                name,
                EdgeCode.MAX_TOKENS_TOO_LARGE,
            )


def _chars(body: ChatCompletionRequest, i: int, limits: InputLimits) -> int:
    """Characters of text in message `i`: its text and the tool calls it made (arguments are
    text the model wrote); images and audio are bounded by the body size, not counted here."""
    message = body.messages[i]
    chars = _tool_call_chars(message.model_extra or {})
    content = message.content
    if content is None or isinstance(content, str):
        return chars + len(content or "")
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in limits.content_parts:
            raise _refuse(
                f"content parts of type {kind!r} are not accepted here "
                f"(accepted: {', '.join(limits.content_parts)})",
                f"messages.{i}.content.{j}.type",
                EdgeCode.UNSUPPORTED_CONTENT_PART,
            )
        text = part.get("text")
        chars += len(text) if isinstance(text, str) else 0
    return chars


def _tool_call_chars(extra: dict[str, Any]) -> int:
    calls = extra.get("tool_calls")
    if not isinstance(calls, list):
        return 0
    chars = 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            chars += sum(len(v) for v in function.values() if isinstance(v, str))
    return chars


def _refuse(message: str, param: str, code: EdgeCode) -> OpenAIError:
    return OpenAIError(400, f"Invalid request: {message}.", param=param, code=code)
