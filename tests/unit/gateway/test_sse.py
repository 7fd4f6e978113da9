"""SSE rendering: OpenAI's chunk frames, ids for resume, and a resume that joins byte for byte."""

import asyncio
import json
from typing import cast

import pytest

from contracts import Completed, Failed, TokenUsage
from services.fanout.hub import Hub
from services.gateway.node import GatewayNode
from services.gateway.sse import FrameRenderer, sse_frames
from services.gateway.submit import EventStream
from tests.unit.fanout.events import REQUEST, Attempt
from tests.unit.gateway.test_submit import FakeNode


def _events(include_usage: bool = False) -> list:
    a = Attempt("a")
    started = a.started().model_copy(update={"include_usage": include_usage})
    deltas = [a.delta(t) for t in ("Hel", "lo", " ☃")]
    usage = TokenUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    done = Completed(request_id=REQUEST, attempt="a", seq=a.seq, finish_reason="stop", usage=usage)
    return [started, *deltas, done]


def _render(after: int, events: list) -> bytes:
    renderer = FrameRenderer(REQUEST, after)
    return b"".join(f.encode() for e in events for f in renderer.render(e))


def _frames(raw: bytes) -> list[tuple[str | None, str]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("id"), fields["data"]))
    return out


class TestFrames:
    def test_chunks_are_openai_shaped_with_seq_ids_and_end_with_done(self) -> None:
        frames = _frames(_render(-1, _events()))
        assert [i for i, _ in frames] == ["0", "1", "2", "3", "4", None]
        chunks = [json.loads(d) for _, d in frames[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello ☃"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert frames[-1] == (None, "[DONE]")

    def test_usage_comes_as_its_own_last_chunk_when_asked_for(self) -> None:
        frames = _frames(_render(-1, _events(include_usage=True)))
        finish, usage = json.loads(frames[-3][1]), json.loads(frames[-2][1])
        assert finish["choices"][0]["finish_reason"] == "stop" and frames[-3][0] is None
        assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 5
        assert frames[-2][0] == "4"  # the id sits on the last frame of the event

    @pytest.mark.parametrize("after", [-1, 0, 1, 2, 3, 4])
    def test_a_resume_after_any_id_is_exactly_the_rest_of_the_stream(self, after: int) -> None:
        whole = _render(-1, _events())
        cut = whole.index(f"id: {after}\n".encode()) if after >= 0 else 0
        end = whole.index(b"\n\n", cut) + 2 if after >= 0 else 0
        assert _render(after, _events()) == whole[end:]

    def test_a_failure_is_an_error_frame_the_sdk_raises(self) -> None:
        a = Attempt("a")
        failed = Failed(
            request_id=REQUEST, attempt="a", seq=1, code="worker_lost", message="gone",
            retryable=True,
        )  # fmt: skip
        frames = _frames(_render(-1, [a.started(), failed]))
        assert json.loads(frames[-1][1])["error"]["code"] == "worker_lost"
        assert frames[-1][0] == "1"


class TestSseFrames:
    async def test_writes_what_is_waiting_in_one_chunk_and_closes_the_stream(self) -> None:
        node, hub = FakeNode(), Hub()
        stream = EventStream(cast(GatewayNode, node), hub.subscribe(REQUEST), ticket="t")
        events = _events()
        for event in events:
            hub.publish(event)
        first = await stream.first()
        async with asyncio.timeout(2):
            writes = [w async for w in sse_frames(stream, FrameRenderer(REQUEST), first=first)]
        assert len(writes) == 2  # the role chunk, then everything that was already waiting
        assert b"".join(writes) == _render(-1, events)
        assert node.released == [("t", 5)] and node.detached == []

    async def test_a_stall_ends_with_a_retryable_error_frame(self) -> None:
        node, hub = FakeNode(idle_timeout_s=0.05), Hub()
        stream = EventStream(cast(GatewayNode, node), hub.subscribe(REQUEST))
        hub.publish(Attempt("a").started())
        first = await stream.first()
        async with asyncio.timeout(2):
            writes = [w async for w in sse_frames(stream, FrameRenderer(REQUEST), first=first)]
        error = json.loads(_frames(writes[-1])[-1][1])["error"]
        assert error["code"] == "stream_timeout"
