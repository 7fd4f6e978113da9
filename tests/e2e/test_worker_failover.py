"""A worker killed before its first token: another worker finishes the request in full."""

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.e2e.helpers import eventually, llmsim_stats, stream_text
from tests.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.slow]


async def test_sigkilled_worker_before_first_token_is_replaced_and_client_gets_whole_answer(
    kafka_bootstrap: str, logs_dir: Path
):
    # A long time to first token keeps the request inside the worker, tokenless, while we kill it.
    system = System(
        kafka_bootstrap,
        f"f{uuid.uuid4().hex[:8]}.",
        logs_dir,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "4000"},
        worker_env={"TOKENBUS_SESSION_TIMEOUT_MS": "6000"},
    )
    system.start(workers=1)
    try:
        messages = [{"role": "user", "content": "survive a crash"}]
        answer = asyncio.create_task(stream_text(system.gateway_url, messages, max_tokens=16))

        async def backend_holds_it() -> bool:
            return (await llmsim_stats(system.llmsim_url))["open_streams"] == 1

        await eventually(backend_holds_it, within=20)
        assert not answer.done()
        system.workers[0].kill()
        system.start_worker().wait_ready(timeout=90)

        text, usage, chunks = await asyncio.wait_for(answer, timeout=90)
        direct, _, _ = await stream_text(system.llmsim_url, messages, model="x", max_tokens=16)
        assert text == direct
        assert usage.completion_tokens == 16
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    finally:
        system.stop()
