"""One request's answer, planned before the first byte: its tokens, finish reason and usage."""

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from services.llmsim.request import Options
from services.llmsim.text import (
    WORDS,
    answer_tokens,
    conversation_digest,
    count_prompt_tokens,
    finish_reason,
    word_tokens,
)
from services.llmsim.tools import tool_calls


class Piece(NamedTuple):
    """One completion token of an answer that is more than plain text."""

    kind: str  # "reasoning", "content", "refusal", "call" (a call's opening) or "arguments"
    text: str  # the token; for "call", the function's name
    call_index: int = 0  # the tool call a "call" or "arguments" piece belongs to
    call_id: str = ""
    logprob: dict[str, Any] | None = None  # OpenAI's ChatCompletionTokenLogprob, if asked


@dataclass(frozen=True, slots=True)
class Answer:
    """Plain text (`options.plain`: `tokens` are str) or pieces; one token each either way."""

    options: Options
    tokens: list[Any]
    reason: str
    usage: dict[str, Any]

    @property
    def refused(self) -> bool:
        """The text goes in `refusal`; a tool call answer has no text to refuse with."""
        return self.options.refusal and not self.options.calls

    def opening(self) -> dict[str, Any]:
        """The delta of the role chunk, as OpenAI opens each kind of answer."""
        if self.options.calls:
            return {"role": "assistant", "content": None}
        if self.refused:
            return {"role": "assistant", "content": None, "refusal": ""}
        return {"role": "assistant", "content": ""}

    def message(self) -> dict[str, Any]:
        """The whole message of a non-stream answer: the pieces of the stream, joined."""
        if self.options.plain:
            return {"role": "assistant", "content": "".join(self.tokens), "refusal": None}
        texts: dict[str, list[str]] = {"reasoning": [], "content": [], "refusal": []}
        calls: list[dict[str, Any]] = []
        for piece in self.tokens:
            if piece.kind == "call":
                calls.append(
                    {
                        "id": piece.call_id,
                        "type": "function",
                        "function": {"name": piece.text, "arguments": ""},
                    }
                )
            elif piece.kind == "arguments":
                calls[piece.call_index]["function"]["arguments"] += piece.text
            else:
                texts[piece.kind].append(piece.text)
        refused = self.refused
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if refused or self.options.calls else "".join(texts["content"]),
            "refusal": "".join(texts["refusal"]) if refused else None,
        }
        if self.options.reasoning:
            message["reasoning_content"] = "".join(texts["reasoning"])
        if calls:
            message["tool_calls"] = calls
        return message

    def logprobs(self) -> dict[str, Any] | None:
        """The choice's `logprobs` of a non-stream answer: every text token's, or None."""
        if self.options.top_logprobs is None:
            return None
        if self.options.calls:  # calls have no logprobs, as at OpenAI
            return {"content": None, "refusal": None}
        entries = [p.logprob for p in self.tokens if p.logprob is not None]
        if self.refused:
            return {"content": None, "refusal": entries}
        return {"content": entries, "refusal": None}


def plan(
    options: Options,
    messages: list[dict[str, Any]],
    limit: int | None,
    default_max_tokens: int,
) -> Answer:
    """The answer to `messages`; `limit` (the request's max tokens) cuts it with "length"."""
    prompt_tokens = count_prompt_tokens(messages)
    if options.plain:
        tokens = answer_tokens(messages, limit, default_max_tokens)
        return Answer(options, tokens, finish_reason(limit), _usage(prompt_tokens, len(tokens)))
    digest = conversation_digest(messages)
    seed = int.from_bytes(digest[:8], "big")  # the text answer's seed too
    reasoning = word_tokens(random.Random(f"reasoning:{seed}"), options.reasoning)
    pieces = [Piece("reasoning", token) for token in reasoning]
    if options.calls:
        for i, call in enumerate(tool_calls(options.calls, digest)):
            pieces.append(Piece("call", call.name, i, call.id))
            pieces.extend(Piece("arguments", fragment, i) for fragment in call.fragments)
        reason = "tool_calls"
    else:
        kind = "refusal" if options.refusal else "content"
        tokens = answer_tokens(messages, limit, default_max_tokens)
        k = options.top_logprobs
        rng = random.Random(f"logprobs:{seed}")
        pieces.extend(
            Piece(kind, token, logprob=None if k is None else _logprob(token, k, rng))
            for token in tokens
        )
        reason = finish_reason(limit)
    if limit is not None and len(pieces) > limit:
        pieces, reason = pieces[:limit], "length"
    usage = _usage(prompt_tokens, len(pieces))
    if options.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": options.cached_tokens}
    if options.reasoning:
        sent = sum(1 for p in pieces if p.kind == "reasoning")
        usage["completion_tokens_details"] = {"reasoning_tokens": sent}
    return Answer(options, pieces, reason, usage)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprob(token: str, k: int, rng: random.Random) -> dict[str, Any]:
    """A made-up but well-formed logprob: the token is the likeliest of its `k` alternatives."""
    logprob = -round(0.01 + 2 * rng.random(), 4)
    entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
    space = " " if token.startswith(" ") else ""
    others = [w for w in rng.sample(WORDS, k) if space + w != token][: max(0, k - 1)]
    top = [dict(entry)]
    for word in others:
        logprob = round(logprob - 0.5 - rng.random(), 4)
        alternative = space + word
        top.append({"token": alternative, "logprob": logprob, "bytes": list(alternative.encode())})
    return {**entry, "top_logprobs": top[:k]}
