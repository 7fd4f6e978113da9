"""Complexity router: the task in the last message decides the tier, not its length."""

import pytest

from services.inference.routing import DEFAULT_THRESHOLD, RouteScore, score_conversation

EMAIL = """Hi all,

The car park on Elm Road will be resurfaced next week, so from Monday to Wednesday please use
the overflow lot behind the gym. Shuttle buses will run every ten minutes between 7am and 10am
and again between 4pm and 7pm. Bikes can still be left in the usual racks. If you have a
disabled badge, reserved spaces remain available at the front entrance throughout the works.
Contractors will be on site from 6am, so expect some noise early in the morning. We expect
everything to be back to normal by Thursday, weather permitting.

Thanks for bearing with us,
Facilities"""

DESIGN_THREAD = [
    {
        "role": "user",
        "content": "Design a multi-region active-active architecture for our "
        "payments ledger with strict consistency, audit trails and a 99.99% SLO.",
    },
    {
        "role": "assistant",
        "content": "Here is a proposal:\n\n1. Partition accounts by region "
        "of residence...\n2. Use a consensus-replicated log...\n" + "More detail. " * 150,
    },
]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def tier(messages: list[dict[str, str]], **kwargs: object) -> str:
    return score_conversation(messages, **kwargs).tier  # type: ignore[arg-type]


class TestHardTasksGoLarge:
    @pytest.mark.parametrize(
        "prompt",
        [
            "Prove that every finite integral domain is a field.",
            "write a function that returns the longest palindromic substring of a string",
            "Design a job scheduler that survives worker crashes and never runs a job twice.",
            "My landlord wants to keep my deposit for normal wear and tear. I'm in Ontario; "
            "should I take him to small claims court?",
            "Write a villanelle about tides. Strict rhyme scheme, each stanza must mention a "
            "different moon phase, and no word may be longer than three syllables.",
        ],
    )
    def test_short_hard_requests(self, prompt: str) -> None:
        assert tier(user(prompt)) == "large"

    def test_debugging_pasted_code(self) -> None:
        prompt = (
            "This hangs forever when two threads call transfer at once. Why, and how do I fix "
            "it?\n\n```python\ndef transfer(a, b, amount):\n    with a.lock:\n        with "
            "b.lock:\n            a.balance -= amount\n            b.balance += amount\n```"
        )
        assert tier(user(prompt)) == "large"

    def test_hard_request_after_small_talk(self) -> None:
        messages = [
            {"role": "user", "content": "hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "derive the closed form of the Fibonacci numbers"},
        ]
        assert tier(messages) == "large"


class TestSimpleTasksGoSmall:
    @pytest.mark.parametrize(
        "prompt",
        [
            "regex for a hex colour like #a1b2c3",
            "what is a monad",
            "who discovered penicillin?",
            "What's 18% of 250?",
            "good morning!",
            "Translate to French: the meeting is moved to Thursday.",
        ],
    )
    def test_short_simple_requests(self, prompt: str) -> None:
        assert tier(user(prompt)) == "small"

    def test_thanks_after_a_long_design_thread(self) -> None:
        messages = [*DESIGN_THREAD, {"role": "user", "content": "thanks!"}]
        assert tier(messages) == "small"

    def test_long_pasted_email_with_a_summary_task(self) -> None:
        result = score_conversation(user("Can you summarise this email in two lines?\n\n" + EMAIL))
        assert result.tier == "small"
        assert "simple_task" in result.top_features()

    def test_mechanical_edit_of_long_code(self) -> None:
        code = "\n".join(f"    total_{i} = compute(x, {i})" for i in range(40))
        prompt = (
            f"rename `compute` to `evaluate` everywhere, nothing else\n\n```python\n{code}\n```"
        )
        assert tier(user(prompt)) == "small"


class TestOtherLanguages:
    @pytest.mark.parametrize(
        ("prompt", "expected"),
        [
            ("Demuestra que hay infinitos números primos.", "large"),
            ("¿Cuál es la capital de Perú?", "small"),
            ("Beweise, dass die Wurzel aus 3 irrational ist.", "large"),
            ("Übersetze ins Englische: Ich komme morgen später.", "small"),
            ("Écris une fonction Python qui inverse une liste chaînée, avec des tests.", "large"),
            ("证明：素数有无穷多个。", "large"),
            ("请把这句话翻译成英文：今天下雨了。", "small"),
            ("富士山の高さは何メートルですか？", "small"),
            ("Como se diz 'obrigado' em japonês?", "small"),
        ],
    )
    def test_language_does_not_change_the_rule(self, prompt: str, expected: str) -> None:
        assert tier(user(prompt)) == expected


class TestScoreShape:
    def test_scoring_is_deterministic(self) -> None:
        messages = user("Compare Raft and Paxos for a 5-node metadata store, with trade-offs.")
        assert score_conversation(messages) == score_conversation(messages)

    def test_top_features_explain_the_decision(self) -> None:
        result = score_conversation(user("Prove that sqrt(2) is irrational."))
        assert result.top_features()
        assert result.top_features(1) == ["proof_reasoning"]
        assert score_conversation(user("")).top_features()

    def test_features_sum_to_the_score(self) -> None:
        result = score_conversation(user("Write a Go CLI that tails a file and counts errors."))
        assert sum(result.features.values()) == pytest.approx(result.score, abs=0.01)

    def test_threshold_is_respected(self) -> None:
        messages = user("Write a haiku about autumn leaves.")
        score = score_conversation(messages).score
        assert score_conversation(messages, threshold=score).tier == "large"
        assert score_conversation(messages, threshold=score + 0.01).tier == "small"
        assert DEFAULT_THRESHOLD == score_conversation.__defaults__[-1]  # type: ignore[index]

    def test_large_max_tokens_pushes_towards_large(self) -> None:
        messages = user("Explain how a CPU cache works.")
        base = score_conversation(messages).score
        assert score_conversation(messages, max_tokens=8000).score > base
        assert score_conversation(messages, max_tokens=50).score < base

    def test_content_parts_score_like_a_string(self) -> None:
        text = "Implement a trie in Rust with insert, delete and prefix search."
        parts = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        split = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Implement a trie in Rust"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
                    {"type": "text", "text": "with insert, delete and prefix search."},
                ],
            }
        ]
        assert score_conversation(parts) == score_conversation(user(text))
        assert score_conversation(split).tier == score_conversation(user(text)).tier

    def test_system_prompt_does_not_change_the_tier(self) -> None:
        system = {"role": "system", "content": "You are a rigorous mathematician. " * 30}
        assert tier([system, *user("what's the capital of Chile?")]) == "small"

    def test_no_user_message_is_small(self) -> None:
        result = score_conversation([{"role": "system", "content": "be brief"}])
        assert isinstance(result, RouteScore)
        assert result.tier == "small"


class TestTools:
    def test_offering_tools_never_lowers_the_score_and_schemas_are_not_text(self) -> None:
        messages = [{"role": "user", "content": "What's the weather in Oslo?"}]
        plain = score_conversation(messages)
        with_tools = score_conversation(messages, offers_tools=True)
        assert with_tools.score == pytest.approx(plain.score + 0.25)
        assert "tools" in with_tools.features and "tools" not in plain.features

    def test_a_tool_result_turn_is_scored_on_the_last_user_message(self) -> None:
        messages = [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "x " * 5000},
        ]
        assert score_conversation(messages).tier == "small"
