"""answer_tokens, finish_reason and count_prompt_tokens: deterministic and shaped as promised."""

from services.llmsim import answer_tokens
from services.llmsim.text import WORDS, count_prompt_tokens, finish_reason

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def test_same_conversation_same_answer() -> None:
    assert answer_tokens(CHAT, None, 64) == answer_tokens(list(CHAT), None, 64)


def test_different_conversation_different_answer() -> None:
    other = [*CHAT[:1], {"role": "user", "content": "Hello there!"}]
    assert answer_tokens(CHAT, None, 64) != answer_tokens(other, None, 64)
    assert answer_tokens(CHAT, None, 64) != answer_tokens(
        [{**CHAT[0], "role": "user"}, CHAT[1]], None, 64
    )


def test_token_shape() -> None:
    tokens = answer_tokens(CHAT, None, 20)
    assert len(tokens) == 20
    assert not tokens[0].startswith(" ")
    assert all(t.startswith(" ") for t in tokens[1:])
    assert tokens[-1].endswith(".")
    assert all(t.strip().rstrip(".") in WORDS for t in tokens)


def test_max_tokens_wins_over_default() -> None:
    assert len(answer_tokens(CHAT, 5, 64)) == 5
    assert answer_tokens(CHAT, 1, 64)[0].endswith(".")
    assert finish_reason(5) == "length"
    assert finish_reason(None) == "stop"


def test_content_parts_equal_plain_text() -> None:
    parts = [{"type": "text", "text": "Hello there"}, {"type": "image_url", "image_url": {}}]
    as_parts = [CHAT[0], {"role": "user", "content": parts}]
    assert answer_tokens(as_parts, None, 16) == answer_tokens(CHAT, None, 16)
    assert count_prompt_tokens(as_parts) == count_prompt_tokens(CHAT)


def test_count_prompt_tokens() -> None:
    assert count_prompt_tokens(CHAT) == (2 + 3) + (2 + 3)
    assert count_prompt_tokens([{"role": "assistant", "content": None}]) == 3


def _tool_turn(arguments: str, result: str) -> list[dict[str, object]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return [
        CHAT[1],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]


def test_tool_calls_and_their_results_decide_the_answer() -> None:
    base = answer_tokens(_tool_turn('{"a":1}', "sunny"), None, 16)
    assert base == answer_tokens(_tool_turn('{"a":1}', "sunny"), None, 16)
    assert base != answer_tokens(_tool_turn('{"a":1}', "rain"), None, 16)
    assert base != answer_tokens(_tool_turn('{"a":2}', "sunny"), None, 16)
    # Empty tool fields, as a parsed request carries them, hash as a plain message.
    empty = [{**m, "tool_calls": None, "tool_call_id": None} for m in CHAT]
    assert answer_tokens(empty, None, 16) == answer_tokens(CHAT, None, 16)


def test_prompt_tokens_count_tool_calls_and_null_content() -> None:
    # user: 2 words; assistant: null content, name "f" and arguments '{"a":1}'; tool: 1 word
    assert count_prompt_tokens(_tool_turn('{"a":1}', "sunny")) == (2 + 3) + (2 + 3) + (1 + 3)
