"""An upstream chunk's delta, split into the pieces the coalescer merges, in a fixed order."""

from collections.abc import Iterator
from typing import Any

from contracts import TokenUsage
from services.inference.coalesce import Piece


def pieces(delta: dict[str, Any], logprobs: dict[str, Any] | None) -> Iterator[Piece]:
    """Reasoning, refusal, text, then tool-call fragments: everything the backend streamed
    (vLLM and DeepSeek name reasoning `reasoning_content`, some servers `reasoning`)."""
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning:
        yield Piece("reasoning", reasoning)
    refusal = delta.get("refusal")
    if refusal:
        yield Piece("refusal", refusal, logprobs=_entries(logprobs, "refusal"))
    content = delta.get("content")
    if content:
        yield Piece("content", content, logprobs=_entries(logprobs, "content"))
    for call in delta.get("tool_calls") or ():
        function = call.get("function") or {}
        yield Piece(
            "tool",
            function.get("arguments") or "",
            call.get("index") or 0,
            call.get("id"),
            function.get("name"),
        )


def _entries(logprobs: dict[str, Any] | None, key: str) -> list[Any] | None:
    return (logprobs.get(key) or None) if logprobs else None


def usage_of(usage: dict[str, Any]) -> TokenUsage:
    """The backend's usage, its details (cached and reasoning tokens) passed through."""
    return TokenUsage(
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        total_tokens=usage.get("total_tokens") or 0,
        prompt_tokens_details=_counts(usage.get("prompt_tokens_details")),
        completion_tokens_details=_counts(usage.get("completion_tokens_details")),
    )


def _counts(details: Any) -> dict[str, int] | None:
    if not isinstance(details, dict):
        return None
    counts = {k: v for k, v in details.items() if isinstance(v, int) and not isinstance(v, bool)}
    return counts or None
