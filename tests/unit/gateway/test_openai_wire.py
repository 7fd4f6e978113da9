"""OpenAI wire shapes: chunks and completions the official SDK accepts; the request model."""

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from contracts import Completed, Delta, TokenUsage
from services.common.openai_errors import param_from_loc as _param
from services.gateway.answer import Answer
from services.gateway.openai_wire import (
    ChatCompletionRequest,
    ChunkFormatter,
    header_value,
)

REQUEST_ID = "chatcmpl-18bcfe56800-0-0123456789abcdef"
USAGE = TokenUsage(prompt_tokens=11, completion_tokens=4, total_tokens=15)
TRICKY = [
    'say "hi"',
    "line one\nline two\r\n",
    "tab\tand \\ backslash",
    "ünïcödé ✓ 😀 中文",
    "</script><b>",
    "\u2028\u2029",
    "",
]


def _chunk(text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(json.loads(text))


def _formatter(include_usage: bool, model: str = "llmsim-small") -> ChunkFormatter:
    return ChunkFormatter(REQUEST_ID, 1_700_000_000, model, include_usage)


class TestChunkFormatter:
    @pytest.mark.parametrize("include_usage", [False, True])
    def test_role_chunk(self, include_usage: bool) -> None:
        chunk = _chunk(_formatter(include_usage).role())
        assert (chunk.id, chunk.object, chunk.created, chunk.model) == (
            REQUEST_ID,
            "chat.completion.chunk",
            1_700_000_000,
            "llmsim-small",
        )
        [choice] = chunk.choices
        assert (choice.index, choice.delta.role, choice.delta.content) == (0, "assistant", "")
        assert choice.finish_reason is None

    @pytest.mark.parametrize("include_usage", [False, True])
    def test_content_chunk(self, include_usage: bool) -> None:
        chunk = _chunk(_formatter(include_usage).content(" Kafka"))
        [choice] = chunk.choices
        assert (choice.delta.content, choice.delta.role, choice.finish_reason) == (
            " Kafka",
            None,
            None,
        )

    @pytest.mark.parametrize("reason", ["stop", "length", "cancelled"])
    def test_finish_chunk(self, reason: str) -> None:
        raw = json.loads(_formatter(False).finish(reason))
        assert raw["choices"][0]["delta"] == {}
        assert raw["choices"][0]["finish_reason"] == reason
        if reason != "cancelled":  # not one of OpenAI's own reasons; SDK types would reject it
            assert _chunk(_formatter(False).finish(reason)).choices[0].finish_reason == reason

    def test_usage_chunk_has_no_choices(self) -> None:
        chunk = _chunk(_formatter(True).usage(USAGE))
        assert chunk.choices == []
        assert chunk.usage is not None
        assert (
            chunk.usage.prompt_tokens,
            chunk.usage.completion_tokens,
            chunk.usage.total_tokens,
        ) == (11, 4, 15)

    def test_with_include_usage_every_other_chunk_has_null_usage(self) -> None:
        fmt = _formatter(True)
        for text in (fmt.role(), fmt.content("x"), fmt.finish("stop")):
            raw = json.loads(text)
            assert "usage" in raw and raw["usage"] is None  # as OpenAI sends it

    def test_without_include_usage_no_chunk_mentions_usage(self) -> None:
        fmt = _formatter(False)
        for text in (fmt.role(), fmt.content("x"), fmt.finish("stop")):
            assert "usage" not in json.loads(text)

    @pytest.mark.parametrize("text", TRICKY)
    def test_content_is_escaped_exactly(self, text: str) -> None:
        raw = _formatter(True).content(text)
        assert "\n" not in raw  # one SSE data line
        assert _chunk(raw).choices[0].delta.content == text

    def test_ids_and_models_are_escaped_too(self) -> None:
        chunk = _chunk(ChunkFormatter('id"1', 1, 'my "model"\n', False).content("x"))
        assert (chunk.id, chunk.model) == ('id"1', 'my "model"\n')


def completion_body(
    request_id: str, created: int, model: str, text: str, finish: str, usage: TokenUsage
) -> dict[str, Any]:
    answer = Answer()
    answer.add(Delta(request_id=request_id, seq=1, attempt="a", content=text))
    done = Completed(request_id=request_id, seq=2, attempt="a", finish_reason=finish, usage=usage)
    return answer.completion(request_id, created, model, done)


class TestCompletionBody:
    @pytest.mark.parametrize("text", TRICKY)
    def test_validates_as_an_openai_chat_completion(self, text: str) -> None:
        body = completion_body(REQUEST_ID, 1_700_000_000, "llmsim-large", text, "length", USAGE)
        completion = ChatCompletion.model_validate(json.loads(json.dumps(body)))
        assert (completion.id, completion.object, completion.model) == (
            REQUEST_ID,
            "chat.completion",
            "llmsim-large",
        )
        [choice] = completion.choices
        assert (choice.message.role, choice.message.content, choice.finish_reason) == (
            "assistant",
            text,
            "length",
        )
        assert completion.usage is not None
        assert completion.usage.total_tokens == 15

    def test_usage_never_reveals_whether_it_was_estimated(self) -> None:
        estimated = TokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2, estimated=True)
        body = completion_body(REQUEST_ID, 1, "m", "x", "stop", estimated)
        assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}


class TestChatCompletionRequest:
    def test_unknown_fields_are_passed_through(self) -> None:
        request = ChatCompletionRequest.model_validate(
            _body(
                temperature=0.5,
                max_tokens=9,
                seed=3,
                response_format={"type": "json_object"},
                user="u1",
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert request.passthrough_params() == {
            "temperature": 0.5,
            "max_tokens": 9,
            "seed": 3,
            "response_format": {"type": "json_object"},
            "user": "u1",
        }

    def test_own_fields_are_never_passed_through(self) -> None:
        request = ChatCompletionRequest.model_validate(
            _body(stream=False, stream_options={"include_usage": False})
        )
        assert request.passthrough_params() == {}

    def test_unset_fields_are_not_invented(self) -> None:
        assert ChatCompletionRequest.model_validate(_body()).passthrough_params() == {}

    def test_passthrough_is_json_ready(self) -> None:
        request = ChatCompletionRequest.model_validate(_body(logit_bias={"50256": -100}, top_p=1))
        assert json.loads(json.dumps(request.passthrough_params())) == {
            "logit_bias": {"50256": -100},
            "top_p": 1.0,
        }

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (None, False),
            ({"include_usage": False}, False),
            ({"include_usage": True}, True),
        ],
    )
    def test_include_usage(self, options: dict[str, bool] | None, expected: bool) -> None:
        body = _body() if options is None else _body(stream_options=options)
        assert ChatCompletionRequest.model_validate(body).include_usage is expected

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"stream": "yes"}, "stream"),
            ({"stream": 1}, "stream"),
            ({"model": 5}, "model"),
            ({"model": ""}, "model"),
            ({"messages": []}, "messages"),
            ({"messages": "hi"}, "messages"),
            ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
            ({"stream_options": {"include_usage": "yes"}}, "stream_options"),
            ({"n": 2}, "n"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"temperature": 3}, "temperature"),
        ],
    )
    def test_invalid_values_are_rejected(self, fields: dict[str, Any], param: str) -> None:
        with pytest.raises(ValidationError) as caught:
            ChatCompletionRequest.model_validate_json(json.dumps(_body(**fields)))
        assert caught.value.errors()[0]["loc"][0] == param

    def test_missing_model(self) -> None:
        body = _body()
        del body["model"]
        with pytest.raises(ValidationError, match="model"):
            ChatCompletionRequest.model_validate(body)


class TestParam:
    @pytest.mark.parametrize(
        ("loc", "param"),
        [
            (("body", "messages", 0, "content", "str"), "messages.0.content"),
            (("body", "messages", 2, "content", "list[dict[str,any]]", 0), "messages.2.content"),
            (("body", "messages", 0, "role"), "messages.0.role"),
            (("body", "stream"), "stream"),
            (("body", "stream_options", "include_usage"), "stream_options.include_usage"),
            (("body",), None),
            ((), None),
        ],
    )
    def test_loc_to_openai_param(self, loc: tuple[Any, ...], param: str | None) -> None:
        assert _param(loc) == param


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("gpt-4.1", "gpt-4.1"),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"),
        ("模型", "%E6%A8%A1%E5%9E%8B"),
        ("a\r\nset-cookie: x", "a%0D%0Aset-cookie: x"),
        ("100%", "100%25"),
    ],
)
def test_a_model_name_becomes_a_safe_header_value(name: str, value: str) -> None:
    assert header_value(name) == value
