"""A whole answer folded from its events: the `chat.completion` of a `stream: false` request."""

from typing import Any

from contracts import Completed, Delta
from services.gateway.openai_wire import usage_dict


class Answer:
    """Text, refusal, reasoning, tool calls and logprobs of one answer, as they stream in."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # by index, in the order they began
        self._logprobs: dict[str, list[Any]] = {}

    def add(self, delta: Delta) -> None:
        self._text.append(delta.content)
        if delta.refusal is not None:
            self._refusal.append(delta.refusal)
        if delta.reasoning is not None:
            self._reasoning.append(delta.reasoning)
        for piece in delta.tool_calls or ():
            call = self._calls.setdefault(
                piece.index,
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if piece.id is not None:
                call["id"] = piece.id
            if piece.name is not None:
                call["function"]["name"] += piece.name
            call["function"]["arguments"] += piece.arguments
        for key, entries in (delta.logprobs or {}).items():
            if isinstance(entries, list):
                self._logprobs.setdefault(key, []).extend(entries)

    def message(self) -> dict[str, Any]:
        text = "".join(self._text)
        message: dict[str, Any] = {
            "role": "assistant",
            # OpenAI sends null content for an answer of tool calls or a refusal alone.
            "content": text if text or not (self._calls or self._refusal) else None,
            "refusal": "".join(self._refusal) if self._refusal else None,
        }
        if self._calls:
            message["tool_calls"] = list(self._calls.values())
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        return message

    def completion(
        self, request_id: str, created: int, model: str, done: Completed
    ) -> dict[str, Any]:
        logprobs = None
        if self._logprobs:
            logprobs = {"content": None, "refusal": None, **self._logprobs}
        return {
            "id": request_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(),
                    "logprobs": logprobs,
                    "finish_reason": done.finish_reason,
                }
            ],
            "usage": usage_dict(done.usage),
        }
