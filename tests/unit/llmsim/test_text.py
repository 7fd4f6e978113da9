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
