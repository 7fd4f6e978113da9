"""Routing, retries, fallbacks, mid-stream failures, deadlines and limits, on a real broker."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from contracts import TOPICS, UsageRecorded
from services.procs import free_port
from tests.e2e.helpers import eventually, llmsim_stats, stream_text
from tests.e2e.usage import usage_of
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

HARD = (
    "Prove that there are infinitely many primes, then write a Python function that "
    "returns the first n primes efficiently and analyse its time complexity step by step."
)


def _tiers(dead_port: int):
    def tiers(llmsim: str) -> dict[str, Any]:
        return {
            "tiers": {
                "small": [
                    {
                        "name": "dead",
                        "base_url": f"http://127.0.0.1:{dead_port}/v1",
                        "model": "llmsim-small",
                        "connect_timeout_s": 1,
                    },
                    {
                        "name": "sim-small",
                        "base_url": llmsim,
                        "model": "llmsim-small",
                        "max_concurrency": 3,
                    },
                ],
                "large": [
                    {
                        "name": "sim-large",
                        "base_url": llmsim,
                        "model": "llmsim-large",
                        "idle_timeout_s": 1.0,
                    }
                ],
            },
            "retry": {"attempts": 2, "initial_backoff_s": 0.02, "max_backoff_s": 0.1},
        }

    return tiers


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="r",
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "5", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "400"},
        worker_env={"TOKENBUS_MAX_CONCURRENCY": "4"},
        tiers=_tiers(free_port()),
    ) as sys_:
        yield sys_


def _fault(spec: str) -> dict[str, Any]:
    return {"metadata": {"llmsim_fault": spec, "llmsim_fault_key": uuid.uuid4().hex}}


async def _post(system: System, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        return await client.post("/v1/chat/completions", json=body, headers=headers)


async def _usage(system: System, request_id: str) -> UsageRecorded:
    return await usage_of(
        system.bootstrap, TOPICS.with_prefix(system.prefix).usage.name, request_id
    )


def _msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class TestRouting:
    async def test_auto_sends_a_greeting_small_and_a_proof_with_code_large(self, system: System):
        easy = await _post(
            system, {"model": "auto", "messages": _msgs("hi there!"), "max_tokens": 4}
        )
        hard = await _post(system, {"model": "auto", "messages": _msgs(HARD), "max_tokens": 4})
        assert easy.status_code == hard.status_code == 200
        assert easy.headers["x-tokenbus-route"] == "small"
        assert hard.headers["x-tokenbus-route"] == "large"
        assert hard.headers["x-tokenbus-route-reason"] == "score"
        assert float(hard.headers["x-tokenbus-route-score"]) > float(
            easy.headers["x-tokenbus-route-score"]
        )
        assert hard.headers["x-tokenbus-route-features"]
        usage = await _usage(system, hard.headers["x-request-id"])
        assert usage.route == "score" and usage.tier == "large" and usage.route_score is not None
        assert usage.route_features

    async def test_a_tier_name_or_a_concrete_model_bypasses_the_score(self, system: System):
        forced = await _post(system, {"model": "large", "messages": _msgs("hi"), "max_tokens": 3})
        named = await _post(
            system, {"model": "llmsim-small", "messages": _msgs(HARD), "max_tokens": 3}
        )
        assert forced.headers["x-tokenbus-route"] == "large"
        assert forced.headers["x-tokenbus-route-reason"] == "explicit"
        assert named.headers["x-tokenbus-route"] == "small"
        assert "x-tokenbus-route-score" not in named.headers


class TestRetriesAndFallbacks:
    async def test_a_retryable_error_is_retried_on_the_same_backend(self, system: System):
        resp = await _post(
            system,
            {
                "model": "large",
                "messages": _msgs("retry me"),
                "max_tokens": 6,
                **_fault("fail_times:1;status:503"),
            },
        )
        assert resp.status_code == 200
        usage = await _usage(system, resp.headers["x-request-id"])
        assert [(t.backend, t.outcome) for t in usage.tries] == [
            ("sim-large", "backend_unavailable"),
            ("sim-large", "ok"),
        ]
        assert usage.status == "ok" and usage.usage.completion_tokens == 6

    async def test_an_unreachable_backend_falls_to_the_next_of_its_tier(self, system: System):
        text, usage_chunk, _ = await stream_text(
            system.gateway_url, _msgs("fall over"), model="small", max_tokens=8
        )
        direct, _, _ = await stream_text(
            system.llmsim_url, _msgs("fall over"), model="x", max_tokens=8
        )
        assert text == direct and usage_chunk.completion_tokens == 8

    async def test_a_failing_tier_falls_back_to_the_other_tier(self, system: System):
        body = {
            "model": "small",
            "messages": _msgs("tier down"),
            "max_tokens": 5,
            **_fault("model:llmsim-small;status:503"),
        }
        resp = await _post(system, body)
        assert resp.status_code == 200, resp.text
        assert resp.json()["model"] == "llmsim-large"
        usage = await _usage(system, resp.headers["x-request-id"])
        assert [t.backend for t in usage.tries] == [
            "dead",
            "dead",
            "sim-small",
            "sim-small",
            "sim-large",
        ]
        assert usage.tier == "large" and usage.backend == "sim-large"

    async def test_a_non_retryable_backend_error_is_not_retried(self, system: System):
        resp = await _post(
            system, {"model": "large", "messages": _msgs("bad"), **_fault("status:400")}
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "invalid_request"
        usage = await _usage(system, resp.headers["x-request-id"])
        assert len(usage.tries) == 1 and usage.status == "failed"


class TestFailuresAfterText:
    async def test_a_connection_dropped_mid_stream_ends_in_a_retryable_failed(self, system: System):
        received: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            async with openai.AsyncOpenAI(
                base_url=f"{system.gateway_url}/v1", api_key="k", max_retries=0
            ) as client:
                stream = await client.chat.completions.create(
                    model="large",
                    messages=_msgs("drop me"),
                    stream=True,
                    max_tokens=20,
                    extra_body=_fault("drop_after:3"),
                )  # type: ignore[arg-type]
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.append(chunk.choices[0].delta.content)
        assert raised.value.code == "backend_unavailable"
        direct, _, _ = await stream_text(
            system.llmsim_url, _msgs("drop me"), model="x", max_tokens=20
        )
        assert len(received) == 3 and direct.startswith("".join(received))

    async def test_a_stalled_upstream_fails_within_the_idle_timeout(self, system: System):
        t0 = time.monotonic()
        resp = await _post(
            system,
            {
                "model": "large",
                "messages": _msgs("stall"),
                "max_tokens": 10,
                **_fault("stall:8000;after:2"),
            },
        )
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "stream_timeout"
        assert time.monotonic() - t0 < 8  # it did not wait for the stall to end

    async def test_the_deadline_bounds_the_whole_request(self, system: System):
        resp = await _post(
            system,
            {"model": "large", "messages": _msgs("late"), **_fault("slow_first_token:8000")},
            **{"x-tokenbus-deadline-s": "1"},
        )
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "deadline_exceeded"


class TestLimits:
    async def test_per_backend_concurrency_is_never_exceeded(self, system: System):
        async with httpx.AsyncClient() as client:
            await client.post(f"{system.llmsim_url}/stats/reset")
        # Each request holds its slot for at least 300 ms, so 12 of them must queue for 3
        # slots: the peak shows the limit both binding and holding, even on a busy machine.
        bodies = [
            {
                "model": "small",
                "messages": _msgs(f"c{i}"),
                "max_tokens": 30,
                **_fault("slow_first_token:300"),
            }
            for i in range(12)
        ]
        results = await asyncio.gather(*(_post(system, b) for b in bodies))
        assert all(r.status_code == 200 for r in results)
        peak = (await llmsim_stats(system.llmsim_url))["peak_open_streams_by_model"]
        assert peak["llmsim-small"] == 3

    async def test_a_full_worker_pauses_fetching_and_resumes(self, system: System):
        worker = system.workers[0]

        async def metric(name: str) -> float:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"{worker.url}/metrics")).text
            return float(
                next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))
            )

        pauses_before = await metric("tokenbus_inference_pauses")
        bodies = [
            {
                "model": "large",
                "messages": _msgs(f"p{i}"),
                "max_tokens": 10,
                **_fault("slow_first_token:300"),
            }
            for i in range(12)
        ]
        results = await asyncio.gather(*(_post(system, b) for b in bodies))
        assert all(r.status_code == 200 for r in results)
        assert await metric("tokenbus_inference_pauses") > pauses_before

        async def resumed() -> bool:
            return await metric("tokenbus_inference_paused") == 0

        await eventually(resumed, within=10)
