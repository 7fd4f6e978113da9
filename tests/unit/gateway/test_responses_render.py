"""The Responses API from our events: OpenAI's event order and shapes (validated with the SDK's
own types), and the request mapped to exactly the equivalent chat request."""

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from contracts import Completed, Delta, Failed, Started, TokenUsage, ToolCallPiece
from services.common.openai_errors import OpenAIError
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.wire import ResponsesRequest, input_items, shell, to_chat

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
RID = "resp_18bcfe56800-2-0123456789abcdef-fedcba9876543210"
USAGE = TokenUsage(prompt_tokens=5, completion_tokens=3, total_tokens=8)


def _req(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "small", "input": "Hi", **fields})


class Log:
    """One attempt's events, seq counted."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, cls: type, **fields: Any) -> Any:
        event = cls(request_id="r", attempt="a", seq=self.seq, **fields)
        self.seq += 1
        return event

    def started(self) -> Started:
        return self(Started, model="llmsim-small", tier="small", created=1)

    def done(self, finish: str = "stop") -> Completed:
        return self(Completed, finish_reason=finish, usage=USAGE)


def _render(events: list[Any], **fields: Any) -> tuple[list[dict[str, Any]], ResponseRenderer]:
    renderer = ResponseRenderer(RID, 1_700_000_000, shell(_req(**fields)))
    out = [e for event in events for e in renderer.render(event)]
    for e in out:
        EVENTS.validate_python(e)  # every event is one the SDK knows, in its exact shape
    Response.model_validate(renderer.snapshot())
    return out, renderer


class TestText:
    def test_events_come_in_openai_s_order_numbered_from_zero(self) -> None:
        log = Log()
        events = [log.started(), log(Delta, content="Hel"), log(Delta, content="lo"), log.done()]
        out, renderer = _render(events)
        assert [e["type"] for e in out] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [e["sequence_number"] for e in out] == list(range(len(out)))
        # Each event shows the state at its own point, not what was appended after it.
        assert out[2]["item"]["content"] == [] and out[3]["part"]["text"] == ""
        final = Response.model_validate(out[-1]["response"])
        assert final.output_text == "Hello" and final.status == "completed"
        assert final.usage is not None and final.usage.output_tokens == 3
        assert renderer.done

    def test_a_background_response_is_queued_first(self) -> None:
        log = Log()
        out, _ = _render([log.started(), log.done()], background=True)
        assert [e["type"] for e in out][:3] == [
            "response.created",
            "response.queued",
            "response.in_progress",
        ]
        assert out[0]["response"]["status"] == "queued"

    def test_the_token_limit_ends_incomplete(self) -> None:
        log = Log()
        out, renderer = _render([log.started(), log(Delta, content="x"), log.done("length")])
        assert out[-1]["type"] == "response.incomplete"
        assert renderer.response["incomplete_details"] == {"reason": "max_output_tokens"}

    def test_a_cancel_ends_incomplete_with_status_cancelled(self) -> None:
        log = Log()
        out, renderer = _render([log.started(), log(Delta, content="x"), log.done("cancelled")])
        assert out[-1]["type"] == "response.incomplete"
        assert renderer.response["status"] == "cancelled"

    def test_a_failure_is_an_error_event_then_response_failed(self) -> None:
        log = Log()
        failed = log(Failed, code="worker_lost", message="gone", retryable=True)
        out, renderer = _render([log.started(), log(Delta, content="x"), failed])
        assert [e["type"] for e in out][-2:] == ["error", "response.failed"]
        assert renderer.response["status"] == "failed"

    def test_a_retry_before_text_changes_the_model_and_emits_nothing(self) -> None:
        log = Log()
        retry = log(Started, model="llmsim-large", tier="large", created=1, try_no=1)
        out, renderer = _render([log.started(), retry, log.done()])
        assert [e["type"] for e in out].count("response.created") == 1
        assert renderer.response["model"] == "llmsim-large"


class TestWholeDelta:
    def test_reasoning_then_two_tool_calls(self) -> None:
        log = Log()
        calls = [
            ToolCallPiece(index=0, id="call_a", type="function", name="f"),
            ToolCallPiece(index=0, arguments='{"x":'),
            ToolCallPiece(index=0, arguments="1}"),
            ToolCallPiece(index=1, id="call_b", type="function", name="g"),
            ToolCallPiece(index=1, arguments="{}"),
        ]
        events = [
            log.started(),
            log(Delta, reasoning="think"),
            *(log(Delta, tool_calls=(piece,)) for piece in calls),
            log.done("tool_calls"),
        ]
        out, renderer = _render(events)
        final = Response.model_validate(renderer.snapshot())
        kinds = [item.type for item in final.output]
        assert kinds == ["reasoning", "function_call", "function_call"]
        fc = [item for item in final.output if item.type == "function_call"]
        assert [(c.call_id, c.name, c.arguments) for c in fc] == [  # type: ignore[union-attr]
            ("call_a", "f", '{"x":1}'),
            ("call_b", "g", "{}"),
        ]
        deltas = [e["delta"] for e in out if e["type"] == "response.function_call_arguments.delta"]
        assert deltas == ['{"x":', "1}", "{}"]
        assert "response.reasoning_text.delta" in [e["type"] for e in out]

    def test_a_refusal_is_its_own_content_part(self) -> None:
        log = Log()
        out, renderer = _render([log.started(), log(Delta, refusal="No."), log.done()])
        assert "response.refusal.delta" in [e["type"] for e in out]
        assert renderer.response["output"][0]["content"] == [{"type": "refusal", "refusal": "No."}]


class TestResume:
    def test_rendering_is_the_same_on_every_node(self) -> None:
        log = Log()
        events = [log.started(), *(log(Delta, content=f"{i} ") for i in range(5)), log.done()]
        first, _ = _render(events)
        again, _ = _render(events)
        assert first[3:] == again[3:]  # created/in_progress carry a snapshot; the rest is equal
        assert [e["sequence_number"] for e in again] == [e["sequence_number"] for e in first]


class TestRequestMapping:
    def test_instructions_and_items_become_the_equivalent_chat_request(self) -> None:
        req = _req(
            instructions="Be brief.",
            input=[
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Q"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            tool_choice={"type": "function", "name": "f"},
            max_output_tokens=9,
            text={"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        )
        chat = to_chat(req)
        sent = [m.model_dump(exclude_none=True) for m in chat.messages]
        assert sent == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Q"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
        params = chat.passthrough_params()
        assert params["max_completion_tokens"] == 9
        assert params["tools"] == [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ]
        assert params["tool_choice"] == {"type": "function", "function": {"name": "f"}}
        assert params["response_format"]["json_schema"]["name"] == "s"

    def test_a_string_input_is_one_user_message_and_lists_back_with_an_id(self) -> None:
        assert [m.content for m in to_chat(_req()).messages] == ["Hi"]
        [item] = input_items("Hi")
        assert item["type"] == "message" and item["id"].startswith("msg_")
        assert item["content"] == [{"type": "input_text", "text": "Hi"}]

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"input": [{"type": "banana"}]}, "input.0.type"),
            ({"tools": [{"type": "web_search"}]}, "tools.0"),
            ({"conversation": "c", "previous_response_id": "resp_x"}, "conversation"),
            ({"reasoning": {"effort": "high"}}, "reasoning"),
            ({"include": ["file_search_call.results"]}, "include.0"),
        ],
    )
    def test_what_cannot_be_honoured_is_refused_by_name(
        self, fields: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(OpenAIError) as raised:
            to_chat(_req(**fields))
        assert (raised.value.status, raised.value.param) == (400, param)


class TestRetention:
    def _stored(self, age_ms: int) -> Any:
        from datetime import UTC, datetime

        from contracts import new_request_id, response_id
        from services.gateway.responses.store import StoredResponse

        now = datetime.now(UTC)
        created = int(now.timestamp() * 1000) - age_ms
        request_id = new_request_id(0, created, "t", b"secret")
        return StoredResponse(
            id=response_id(request_id),
            tenant="t",
            request_id=request_id,
            created_at=now,
            expires_at=now,
            background=True,
            shell={},
            input_items=[],
        )

    def test_a_response_whose_events_are_gone_is_a_clear_410(self) -> None:
        from services.gateway.responses.lookup import no_events as _no_events

        err = _no_events(self._stored(age_ms=2 * 86_400_000))
        assert (err.status, err.code) == (410, "response_expired")

    def test_a_response_not_taken_yet_is_a_409_to_retry(self) -> None:
        from services.gateway.responses.lookup import no_events as _no_events

        err = _no_events(self._stored(age_ms=1_000))
        assert (err.status, err.code) == (409, "response_not_started")
