"""Bad requests get OpenAI-style 400s, and nothing reaches Kafka for them."""

from typing import Any

import httpx
import pytest

from contracts import TOPICS
from tests.kafka_records import record_events
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

OK_MESSAGES = [{"role": "user", "content": "hi"}]

BAD_BODIES: dict[str, tuple[Any, str | None]] = {
    "missing messages": ({"model": "auto"}, "messages"),
    "empty messages": ({"model": "auto", "messages": []}, "messages"),
    "messages not a list": ({"model": "auto", "messages": "hi"}, "messages"),
    "unknown role": (
        {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]},
        "messages.0.role",
    ),
    "content wrong type": (
        {"model": "auto", "messages": [{"role": "user", "content": 5}]},
        "messages.0.content",
    ),
    "stream not a bool": ({"model": "auto", "messages": OK_MESSAGES, "stream": "yes"}, "stream"),
    "max_tokens not an int": (
        {"model": "auto", "messages": OK_MESSAGES, "max_tokens": "ten"},
        "max_tokens",
    ),
    "model not a string": ({"model": 5, "messages": OK_MESSAGES}, "model"),
    "missing model": ({"messages": OK_MESSAGES}, "model"),
    "body not an object": ([1, 2], None),
    "n above one": ({"model": "auto", "messages": OK_MESSAGES, "n": 2}, "n"),
}


def _requests(system: System) -> str:
    return TOPICS.with_prefix(system.prefix).requests.name


def _assert_openai_error(resp: httpx.Response, param: str | None) -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param is not None:
        assert error["param"] == param


class TestBadInput:
    async def test_each_bad_body_is_a_400_in_openai_shape_and_publishes_nothing(
        self, system: System
    ):
        async with (
            record_events(system.bootstrap, _requests(system), expect=0),  # nothing published
            httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client,
        ):
            for name, (body, param) in BAD_BODIES.items():
                resp = await client.post("/v1/chat/completions", json=body)
                assert resp.status_code == 400, name
                _assert_openai_error(resp, param)
            for raw in (b"{not json", b"", b"\xff\xfe", b'{"model": "auto", "messages": [}'):
                resp = await client.post(
                    "/v1/chat/completions",
                    content=raw,
                    headers={"content-type": "application/json"},
                )
                _assert_openai_error(resp, None)

    async def test_a_good_request_after_bad_ones_is_published_once(self, system: System):
        async with record_events(system.bootstrap, _requests(system)) as published:
            async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
                resp = await client.post(
                    "/v1/chat/completions",
                    json={"model": "auto", "messages": OK_MESSAGES, "max_tokens": 3},
                )
            assert resp.status_code == 200
        assert len(published.records) == 1, [str(r) for r in published.records]
