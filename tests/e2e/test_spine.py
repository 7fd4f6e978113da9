"""The spine end to end: openai SDK -> gateway -> Kafka -> worker -> llmsim -> back."""

import asyncio
import time

import httpx
import pytest

from tests.e2e.helpers import complete, llmsim_stats, stream_text
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

QUESTION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is Kafka, in one sentence?"},
]


class TestStreamedAnswer:
    async def test_streamed_text_equals_llmsim_direct_and_ends_with_usage(self, system: System):
        through, usage, chunks = await stream_text(system.gateway_url, QUESTION, max_tokens=40)
        direct, direct_usage, _ = await stream_text(
            system.llmsim_url, QUESTION, model="llmsim-small", max_tokens=40
        )
        assert through == direct
        assert len(through.split()) == 40
        assert usage is not None and usage.completion_tokens == direct_usage.completion_tokens == 40
        assert usage.prompt_tokens == direct_usage.prompt_tokens
        assert chunks[-1].choices == []
        assert chunks[-2].choices[0].finish_reason == "length"
        assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")

    async def test_non_streamed_text_equals_llmsim_direct(self, system: System):
        through = await complete(system.gateway_url, QUESTION, model="small", max_tokens=25)
        direct = await complete(system.llmsim_url, QUESTION, model="whatever", max_tokens=25)
        assert through.choices[0].message.content == direct.choices[0].message.content
        assert through.choices[0].finish_reason == "length"
        assert through.usage is not None and through.usage.completion_tokens == 25
        assert through.usage.prompt_tokens == direct.usage.prompt_tokens  # type: ignore[union-attr]

    async def test_sse_frames_carry_seq_ids_and_response_names_the_request(self, system: System):
        body = {"model": "auto", "messages": QUESTION, "stream": True, "max_tokens": 5}
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", f"{system.gateway_url}/v1/chat/completions", json=body) as resp,
        ):
            assert resp.status_code == 200
            assert resp.headers["x-request-id"].startswith("chatcmpl-")
            assert resp.headers["x-tokenbus-route"] in ("small", "large")
            raw = (await resp.aread()).decode()
        frames = [f for f in raw.split("\n\n") if f.strip() and not f.startswith(":")]
        ids = [int(line[4:]) for f in frames for line in f.split("\n") if line.startswith("id: ")]
        assert ids == list(range(len(ids))) and len(ids) == 7  # started, 5 deltas, completed
        assert frames[-1] == "data: [DONE]"


class TestConcurrency:
    async def test_fifty_concurrent_streams_through_one_worker_overlap_and_all_complete(
        self, system: System
    ):
        async with httpx.AsyncClient() as client:
            await client.post(f"{system.llmsim_url}/stats/reset")
        prompts = [[{"role": "user", "content": f"question number {i}"}] for i in range(50)]

        async def one(messages):
            t0 = time.monotonic()
            text, usage, _ = await stream_text(system.gateway_url, messages, max_tokens=64)
            return text, usage, t0, time.monotonic()

        results = await asyncio.gather(*(one(m) for m in prompts))
        peak = (await llmsim_stats(system.llmsim_url))["peak_open_streams"]
        expected = await asyncio.gather(
            *(stream_text(system.llmsim_url, m, model="x", max_tokens=64) for m in prompts)
        )
        for (text, usage, _, _), (direct, _, _) in zip(results, expected, strict=True):
            assert text == direct
            assert usage.completion_tokens == 64
        # Overlap: many were open at once at the client and at the backend; a worker that
        # served one request at a time would show a backend peak of exactly 1.
        starts = [r[2] for r in results]
        ends = [r[3] for r in results]
        most_open = max(
            sum(1 for s, e in zip(starts, ends, strict=True) if s <= t < e) for t in starts
        )
        assert most_open >= 25
        assert peak >= 10
        assert len(system.workers) == 1
