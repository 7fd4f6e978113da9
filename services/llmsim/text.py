"""Deterministic answers and token counts: the same conversation always gets the same text."""

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from typing import Any

# Common English words; answers are drawn from these so they look like (meaningless) prose.
WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is you that it he was for on are as with his they at be this have from
    or one had by word but not what all were we when your can said there use an each which she
    do how their if will up other about out many then them these so some her would make like
    him into time has look two more write go see number no way could people my than first water
    been call who oil its now find long down day did get come made may part over new sound take
    only little work know place year live me back give most very after thing our just name good
    sentence man think say great where help through much before line right too mean old any same
    tell boy follow came want show also around form three small set put end does another well
    large must big even such because turn here why ask went men read need land different home us
    move try kind hand picture again change off play spell air away animal house point page letter
    mother answer found study still learn should world high every near add food between own below
    country plant last school father keep tree never start city earth eye light thought head under
    story saw left few while along might close something seem next hard open example begin life
    always those both paper together got group often run important until children side feet car
    """.split()
)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or OpenAI content parts (text parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return str(content)


def _canonical(message: Mapping[str, Any]) -> list[Any]:
    entry: list[Any] = [str(message.get("role", "")), content_text(message.get("content"))]
    # Tool calls and tool results join the seed only when present, so a plain message hashes
    # exactly as before (plain answers stay byte-identical) while a different tool result,
    # or a call with other arguments, gives a different answer.
    calls = message.get("tool_calls")
    if calls:
        entry.append([_call_key(call) for call in calls if isinstance(call, Mapping)])
    if message.get("tool_call_id"):
        entry.append(str(message["tool_call_id"]))
    return entry


def _call_key(call: Mapping[str, Any]) -> list[str]:
    function = call.get("function") or {}
    return [
        str(call.get("id", "")),
        str(function.get("name", "")),
        str(function.get("arguments") or ""),
    ]


def conversation_digest(messages: list[dict[str, Any]]) -> bytes:
    """SHA-256 of what decides the answer: each message's role, text, tool calls and result id.

    The model name, sampling parameters and whether content was sent as a string or as parts
    do not count, so they do not change the answer."""
    canonical = json.dumps(
        [_canonical(m) for m in messages], ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()


def conversation_seed(messages: list[dict[str, Any]]) -> int:
    """The seed of every deterministic choice made for this conversation."""
    return int.from_bytes(conversation_digest(messages)[:8], "big")


def word_tokens(rng: random.Random, n: int) -> list[str]:
    """`n` words drawn by `rng` as tokens: a leading space from the second on, a final period."""
    if n <= 0:
        return []
    words = rng.choices(WORDS, k=n)
    tokens = [words[0], *(" " + word for word in words[1:])]
    tokens[-1] += "."
    return tokens


def answer_tokens(
    messages: list[dict[str, Any]], max_tokens: int | None, default_max_tokens: int
) -> list[str]:
    """Exactly `max_tokens or default_max_tokens` tokens; their concatenation is the answer."""
    return word_tokens(random.Random(conversation_seed(messages)), max_tokens or default_max_tokens)


def finish_reason(max_tokens: int | None) -> str:
    """ "length" when the client capped the answer (the cap is always reached), else "stop"."""
    return "length" if max_tokens else "stop"


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A stand-in tokenizer: whitespace-separated words of every content (and of assistant
    tool calls' names and arguments), plus 3 per message."""
    total = 0
    for m in messages:
        total += len(content_text(m.get("content")).split()) + 3
        for call in m.get("tool_calls") or ():
            if isinstance(call, Mapping):
                total += sum(len(part.split()) for part in _call_key(call)[1:])
    return total
