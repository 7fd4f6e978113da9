"""The WebSocket protocol without a network: parsing client messages and rendering frames.

The socket's own answers (auth, errors on a live socket) are in tests/e2e/test_ws.py."""

import json
from typing import Any

import pytest

from contracts import Completed, Delta, Failed, Started, TokenUsage
from contracts.errors import ErrorCode
from services.gateway.ws_protocol import (
    AuthMessage,
    CancelMessage,
    ChatMessage,
    PingMessage,
    ResumeMessage,
    WsError,
    event_frame,
    parse_client_message,
)

HI = [{"role": "user", "content": "hi"}]
RID = "chatcmpl-19a0b1c2d3e-0-0123456789abcdef"


def _error(raw: str | bytes) -> WsError:
    parsed = parse_client_message(raw)
    assert isinstance(parsed, WsError), parsed
    frame = json.loads(parsed.frame())
    assert frame["type"] == "error" and frame["code"] and frame["message"]
    return parsed


class TestValidMessages:
    def test_chat_is_the_chat_completions_body_next_to_type_and_id(self) -> None:
        raw = {
            "type": "chat",
            "id": "c1",
            "model": "auto",
            "messages": HI,
            "max_tokens": 5,
            "temperature": 0.5,
            "stream": False,  # ignored: a socket always streams
            "user": "u-7",  # unknown fields pass through, as on HTTP
        }
        msg = parse_client_message(json.dumps(raw))
        assert isinstance(msg, ChatMessage)
        assert msg.id == "c1" and msg.deadline_s is None
        assert msg.body.model == "auto" and msg.body.messages[0].content == "hi"
        assert msg.body.passthrough_params() == {"max_tokens": 5, "temperature": 0.5, "user": "u-7"}

    def test_chat_takes_a_deadline_and_an_integer_id(self) -> None:
        raw = {"type": "chat", "id": 7, "deadline_s": 2.5, "model": "m", "messages": HI}
        msg = parse_client_message(json.dumps(raw))
        assert isinstance(msg, ChatMessage) and msg.id == 7 and msg.deadline_s == 2.5
        assert "deadline_s" not in msg.body.passthrough_params()

    def test_cancel_resume_ping_auth(self) -> None:
        cancel = parse_client_message(json.dumps({"type": "cancel", "request_id": RID}))
        assert isinstance(cancel, CancelMessage) and cancel.request_id == RID
        resume = parse_client_message(
            json.dumps({"type": "resume", "request_id": RID, "last_seq": 4})
        )
        assert isinstance(resume, ResumeMessage) and resume.last_seq == 4
        from_start = parse_client_message(json.dumps({"type": "resume", "request_id": RID}))
        assert isinstance(from_start, ResumeMessage) and from_start.last_seq == -1
        assert isinstance(parse_client_message('{"type":"ping"}'), PingMessage)
        auth = parse_client_message(b'{"type":"auth","api_key":"sk-1"}')
        assert isinstance(auth, AuthMessage) and auth.api_key == "sk-1"


class TestBadMessages:
    @pytest.mark.parametrize("raw", ["not json", '{"type": "chat",', b"\xff\xfe", ""])
    def test_invalid_json(self, raw: str | bytes) -> None:
        assert _error(raw).code == "invalid_json"

    @pytest.mark.parametrize("raw", ["[1, 2]", '"chat"', "42", "null"])
    def test_not_an_object(self, raw: str) -> None:
        assert _error(raw).code == "invalid_json"

    @pytest.mark.parametrize("raw", ['{"type": "subscribe", "id": "x"}', '{"id": "x"}'])
    def test_unknown_or_missing_type_names_the_client_id(self, raw: str) -> None:
        err = _error(raw)
        assert err.code == "unknown_type" and err.param == "type" and err.id == "x"

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"model": "auto", "messages": []}, "messages"),
            (
                {"model": "auto", "messages": [{"role": "robot", "content": "hi"}]},
                "messages.0.role",
            ),
            ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
            ({"messages": HI}, "model"),
            ({"model": "auto", "messages": HI, "n": 3}, "n"),
            ({"model": "auto", "messages": HI, "max_tokens": 0}, "max_tokens"),
            ({"model": "auto", "messages": HI, "deadline_s": -1}, "deadline_s"),
        ],
    )
    def test_bad_chat_body_names_the_param_as_openai_does(
        self, body: dict[str, Any], param: str
    ) -> None:
        err = _error(json.dumps({"type": "chat", "id": "c9", **body}))
        assert err.code == "invalid_value" and err.param == param and err.id == "c9"
        assert param in err.message

    @pytest.mark.parametrize(
        ("raw", "param"),
        [
            ({"type": "cancel"}, "request_id"),
            ({"type": "cancel", "request_id": 5}, "request_id"),
            ({"type": "resume", "request_id": RID, "last_seq": -2}, "last_seq"),
            ({"type": "resume", "request_id": RID, "last_seq": "3"}, "last_seq"),
            ({"type": "auth"}, "api_key"),
        ],
    )
    def test_bad_fields_of_other_messages(self, raw: dict[str, Any], param: str) -> None:
        err = _error(json.dumps(raw))
        assert err.code == "invalid_value" and err.param == param

    def test_an_unusable_client_id_is_not_echoed(self) -> None:
        assert _error(json.dumps({"type": "nope", "id": {"a": 1}})).id is None
        assert _error(json.dumps({"type": "nope", "id": True})).id is None


class TestEventFrames:
    def test_delta_frame_is_built_by_hand_but_equals_the_generic_rendering(self) -> None:
        delta = Delta(request_id=RID, seq=3, attempt="a1", content='say "hé"\n', role="assistant")
        frame = json.loads(event_frame(delta))
        assert frame == {"type": "delta", "request_id": RID, "seq": 3, "content": 'say "hé"\n'}

    def test_started_completed_failed_keep_their_fields_and_drop_internal_ones(self) -> None:
        started = json.loads(
            event_frame(
                Started(
                    request_id=RID,
                    seq=0,
                    attempt="a1",
                    model="llmsim-small",
                    tier="small",
                    backend="sim",
                    route_reason="score",
                    route_score=0.25,
                    route_features=("length",),
                    created=1,
                )
            )
        )
        assert started["type"] == "started" and started["seq"] == 0
        assert started["model"] == "llmsim-small" and started["tier"] == "small"
        assert started["route_score"] == 0.25 and started["route_features"] == ["length"]
        usage = TokenUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
        completed = json.loads(
            event_frame(
                Completed(request_id=RID, seq=4, attempt="a1", finish_reason="stop", usage=usage)
            )
        )
        assert completed["finish_reason"] == "stop" and completed["usage"]["total_tokens"] == 5
        failed = json.loads(
            event_frame(
                Failed(
                    request_id=RID,
                    seq=5,
                    attempt="a1",
                    code=ErrorCode.WORKER_LOST,
                    message="lost",
                    retryable=True,
                )
            )
        )
        assert (failed["code"], failed["retryable"]) == ("worker_lost", True)
        for frame in (started, completed, failed):
            assert frame["request_id"] == RID
            assert not {"attempt", "event_id", "schema_version", "ts"} & set(frame)
