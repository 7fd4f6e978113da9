"""The whole delta reaches clients: tool calls, refusal, reasoning and logprobs, in OpenAI's
chunk and completion shapes (validated with the official SDK's types)."""

import json
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from contracts import Completed, Delta, TokenUsage, ToolCallPiece
from services.gateway.answer import Answer
from services.gateway.openai_wire import ChunkFormatter

REQUEST = "chatcmpl-1"
USAGE = TokenUsage(
    prompt_tokens=9,
    completion_tokens=7,
    total_tokens=16,
    prompt_tokens_details={"cached_tokens": 4},
    completion_tokens_details={"reasoning_tokens": 2},
)


def _delta(seq: int, **fields: Any) -> Delta:
    return Delta(request_id=REQUEST, seq=seq, attempt="a", **fields)


def _tool_deltas() -> list[Delta]:
    """Two parallel calls, as a backend streams them, coalesced per index."""
    return [
        _delta(1, tool_calls=(ToolCallPiece(index=0, id="call_a", type="function", name="f"),)),
        _delta(2, tool_calls=(ToolCallPiece(index=0, arguments='{"city":'),)),
        _delta(3, tool_calls=(ToolCallPiece(index=0, arguments='"Oslo"}'),)),
        _delta(4, tool_calls=(ToolCallPiece(index=1, id="call_b", type="function", name="g"),)),
        _delta(5, tool_calls=(ToolCallPiece(index=1, arguments="{}"),)),
    ]


def _chunk(raw: str) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate_json(raw)


class TestChunks:
    def test_tool_call_pieces_are_openai_tool_call_deltas(self) -> None:
        fmt = ChunkFormatter(REQUEST, 1, "m", False)
        chunks = [_chunk(fmt.delta(d)) for d in _tool_deltas()]
        first = chunks[0].choices[0].delta.tool_calls
        assert first is not None
        assert (first[0].index, first[0].id, first[0].type) == (0, "call_a", "function")
        assert first[0].function is not None and first[0].function.name == "f"
        continuation = chunks[1].choices[0].delta.tool_calls
        assert continuation is not None and continuation[0].id is None
        assert continuation[0].function is not None
        assert continuation[0].function.arguments == '{"city":'

    def test_refusal_and_reasoning_reach_the_sdk(self) -> None:
        fmt = ChunkFormatter(REQUEST, 1, "m", False)
        refusal = _chunk(fmt.delta(_delta(1, refusal="I can't"))).choices[0].delta
        assert refusal.refusal == "I can't" and refusal.content is None
        thinking = _chunk(fmt.delta(_delta(2, reasoning="hmm"))).choices[0].delta
        assert (thinking.model_extra or {})["reasoning_content"] == "hmm"

    def test_logprobs_ride_on_the_choice(self) -> None:
        fmt = ChunkFormatter(REQUEST, 1, "m", False)
        entry = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
        chunk = _chunk(fmt.delta(_delta(1, content="Hi", logprobs={"content": [entry]})))
        choice = chunk.choices[0]
        assert choice.delta.content == "Hi"
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert choice.logprobs.content[0].token == "Hi"

    def test_usage_details_pass_through(self) -> None:
        chunk = _chunk(ChunkFormatter(REQUEST, 1, "m", True).usage(USAGE))
        assert chunk.usage is not None
        assert chunk.usage.prompt_tokens_details is not None
        assert chunk.usage.prompt_tokens_details.cached_tokens == 4
        assert chunk.usage.completion_tokens_details is not None
        assert chunk.usage.completion_tokens_details.reasoning_tokens == 2


def _completion(deltas: list[Delta], finish: str) -> ChatCompletion:
    answer = Answer()
    for delta in deltas:
        answer.add(delta)
    done = Completed(request_id=REQUEST, seq=9, attempt="a", finish_reason=finish, usage=USAGE)
    body = answer.completion(REQUEST, 1, "m", done)
    return ChatCompletion.model_validate(json.loads(json.dumps(body)))


class TestCompletion:
    def test_tool_calls_are_assembled_per_index(self) -> None:
        completion = _completion(_tool_deltas(), "tool_calls")
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls = choice.message.tool_calls or []
        assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
            ("call_a", "f", '{"city":"Oslo"}'),
            ("call_b", "g", "{}"),
        ]

    def test_refusal_reasoning_text_and_logprobs(self) -> None:
        entry = {"token": "ok", "logprob": -0.1, "bytes": None, "top_logprobs": []}
        completion = _completion(
            [
                _delta(1, reasoning="think "),
                _delta(2, reasoning="more"),
                _delta(3, content="ok", logprobs={"content": [entry]}),
                _delta(4, content="!"),
            ],
            "stop",
        )
        choice = completion.choices[0]
        assert choice.message.content == "ok!" and choice.message.refusal is None
        assert (choice.message.model_extra or {})["reasoning_content"] == "think more"
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert [e.token for e in choice.logprobs.content] == ["ok"]
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None

    def test_a_refusal_alone_has_null_content(self) -> None:
        choice = _completion([_delta(1, refusal="No.")], "stop").choices[0]
        assert (choice.message.content, choice.message.refusal) == (None, "No.")
