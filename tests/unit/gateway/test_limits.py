"""Input limits: each refusal is a 400 naming the field, and a request within them passes."""

import pytest

from services.common.openai_errors import OpenAIError as ApiError
from services.gateway.limits import InputLimits, check_input
from services.gateway.openai_wire import ChatCompletionRequest

LIMITS = InputLimits(
    max_messages=3,
    max_message_chars=10,
    max_total_chars=15,
    max_output_tokens=100,
    content_parts=["text"],
)


def _body(messages: list[dict], **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "auto", "messages": messages, **extra})


def _user(content: object) -> dict:
    return {"role": "user", "content": content}


def _refusal(body: ChatCompletionRequest) -> ApiError:
    with pytest.raises(ApiError) as raised:
        check_input(body, LIMITS)
    assert raised.value.status == 400
    return raised.value


class TestInputLimits:
    def test_a_request_within_every_limit_passes(self):
        check_input(
            _body([_user("hello"), _user([{"type": "text", "text": "there"}])], max_tokens=100),
            LIMITS,
        )

    def test_too_many_messages(self):
        err = _refusal(_body([_user("a")] * 4))
        assert (err.param, err.code) == ("messages", "too_many_messages")

    def test_a_message_too_long_names_it(self):
        err = _refusal(_body([_user("ok"), _user("x" * 11)]))
        assert (err.param, err.code) == ("messages.1.content", "message_too_long")

    def test_text_parts_count_towards_the_length(self):
        err = _refusal(_body([_user([{"type": "text", "text": "x" * 11}])]))
        assert err.param == "messages.0.content"

    def test_all_messages_together_too_long(self):
        err = _refusal(_body([_user("x" * 8), _user("y" * 8)]))
        assert (err.param, err.code) == ("messages", "context_too_long")

    @pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
    def test_max_tokens_above_the_ceiling(self, field: str):
        err = _refusal(_body([_user("hi")], **{field: 101}))
        assert (err.param, err.code) == (field, "max_tokens_too_large")

    def test_an_unaccepted_content_part_names_its_type(self):
        err = _refusal(_body([_user([{"type": "image_url", "image_url": {"url": "x"}}])]))
        assert (err.param, err.code) == ("messages.0.content.0.type", "unsupported_content_part")


class TestToolsAndMedia:
    def test_tool_call_arguments_count_as_the_message_s_characters(self):
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x" * 20}}
        body = _body([{"role": "assistant", "content": None, "tool_calls": [call]}])
        err = _refusal(body)
        assert (err.param, err.code) == ("messages.0.content", "message_too_long")

    def test_a_tool_result_and_an_audio_part_pass_by_default(self):
        audio = {"type": "input_audio", "input_audio": {"data": "AAAA" * 1000, "format": "wav"}}
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        check_input(
            _body(
                [
                    _user([{"type": "text", "text": "what is this?"}, audio]),
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "c", "content": "a chime"},
                ]
            ),
            InputLimits(),
        )


class TestUnexpectedErrors:
    async def test_a_bug_is_a_500_in_openai_shape_without_details(self):
        import httpx
        from fastapi import FastAPI

        from services.common.openai_errors import install_error_handlers

        app = FastAPI()
        install_error_handlers(app)

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("secret sk-live-123 in a stack trace")

        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            resp = await client.get("/boom")
        assert resp.status_code == 500
        assert resp.json()["error"]["code"] == "internal_error"
        assert "sk-live" not in resp.text and "Traceback" not in resp.text
