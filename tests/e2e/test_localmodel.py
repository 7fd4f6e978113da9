"""The bundled local LLM for real: SmolLM2-135M-Instruct on llama.cpp, on this machine's CPU.

The model server runs as its own process (`python -m services.localmodel`, one slot so a
busy slot is visible); first on its own, then behind tokenbus (gateway -> Kafka -> worker ->
model) with the `local` models profile, spoken to with the official `openai` SDK.
"""

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.procs import ServiceProcess, free_port
from tests.e2e.helpers import complete, eventually, sdk, stream_text
from tests.system import System, running_system

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

MODEL = "smollm2-135m"
QUESTION = [{"role": "user", "content": "Explain photosynthesis briefly."}]
ESSAY = [{"role": "user", "content": "Write a long, detailed essay on the history of Rome."}]
COMMON_WORDS = {
    *"the a an is are was of and or to in on for with as by that this it its from be".split(),
    *"which they their can these plants light energy into".split(),
}
GRACE_S = 0.5  # a client that hangs up is cancelled after this long


@pytest.fixture(scope="module")
def localmodel(logs_dir: Path) -> Iterator[ServiceProcess]:
    port = free_port()
    proc = ServiceProcess(
        "localmodel",
        ["--port", str(port)],
        port,
        {
            "TOKENBUS_LOCALMODEL_PARALLEL": "1",  # one slot: a busy slot blocks the next request
            "TOKENBUS_LOCALMODEL_CTX_SIZE": "2048",
            "TOKENBUS_LOCALMODEL_LOG_FORMAT": "json",
        },
        logs_dir / f"localmodel-{uuid.uuid4().hex[:8]}.log",
        module="services.localmodel",
    ).start()
    try:
        proc.wait_ready(timeout=120)
    except BaseException:
        proc.stop()
        raise
    yield proc
    proc.stop()


def _english(text: str) -> None:
    """Mostly ASCII words, several of them everyday English ones."""
    words = [w.strip(".,;:!?\"'()-*") for w in text.split()]
    words = [w for w in words if w]
    ascii_alpha = [w for w in words if re.fullmatch(r"[A-Za-z][A-Za-z'-]*", w)]
    assert len(words) >= 5, text
    assert len(ascii_alpha) >= 0.8 * len(words), text
    assert len({w.lower() for w in ascii_alpha} & COMMON_WORDS) >= 2, text


async def _metric(url: str, name: str) -> float:
    """One of llama.cpp's metrics, from the model server's /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{url}/metrics")).text
    match = re.search(rf"^{name} (\S+)$", metrics, re.M)
    assert match, metrics
    return float(match.group(1))


async def _slot_free(url: str) -> bool:
    return await _metric(url, "llamacpp_requests_processing") == 0


class TestTheModelServer:
    async def test_a_streamed_english_answer_with_usage(self, localmodel: ServiceProcess):
        text, usage, chunks = await stream_text(
            localmodel.url, QUESTION, model=MODEL, max_tokens=48, temperature=0
        )
        _english(text)
        assert {c.model for c in chunks} == {MODEL}  # the alias, not the GGUF's path
        assert chunks[-1].choices == [] and usage is not None
        assert 0 < usage.completion_tokens <= 48 and usage.prompt_tokens > 5

    async def test_max_tokens_is_honoured(self, localmodel: ServiceProcess):
        answer = await complete(localmodel.url, ESSAY, model=MODEL, max_tokens=7)
        assert answer.usage.completion_tokens == 7
        assert answer.choices[0].finish_reason == "length"

    async def test_seed_and_temperature_are_honoured(self, localmodel: ServiceProcess):
        async def text(**params: Any) -> str:
            answer = await complete(localmodel.url, ESSAY, model=MODEL, max_tokens=12, **params)
            return answer.choices[0].message.content  # type: ignore[no-any-return]

        # temperature 0 is greedy: the seed does not matter
        assert await text(temperature=0, seed=1) == await text(temperature=0, seed=2)
        # sampling: the seed decides, the same seed gives the same answer
        sampled = [await text(temperature=1.5, seed=s) for s in (1, 2, 3)]
        assert len(set(sampled)) >= 2
        assert await text(temperature=1.5, seed=1) == sampled[0]

    async def test_a_stop_sequence_ends_the_answer_before_it(self, localmodel: ServiceProcess):
        full = await complete(localmodel.url, QUESTION, model=MODEL, max_tokens=24, temperature=0)
        text = full.choices[0].message.content
        stop = " " + text.split()[3]
        cut = await complete(
            localmodel.url, QUESTION, model=MODEL, max_tokens=24, temperature=0, stop=[stop]
        )
        assert cut.choices[0].message.content == text[: text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
        assert cut.usage.completion_tokens < full.usage.completion_tokens

    async def test_models_and_metrics(self, localmodel: ServiceProcess):
        async with httpx.AsyncClient(base_url=localmodel.url, timeout=10) as client:
            models = (await client.get("/v1/models")).json()
            metrics = (await client.get("/metrics")).text
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert "llamacpp_tokens_predicted_total" in metrics
        assert 'localmodel_requests_total{stream="true"}' in metrics
        assert await _slot_free(localmodel.url)


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, localmodel: ServiceProcess) -> Iterator[System]:
    models = {
        "TOKENBUS_MODELS": "local",
        "TOKENBUS_LOCALMODEL_URL": f"{localmodel.url}/v1",
        "TOKENBUS_LOCALMODEL_PARALLEL": "1",
    }
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="lm",
        worker_env=models,
        gateway_env={**models, "TOKENBUS_DISCONNECT_GRACE_S": str(GRACE_S)},
    ) as sys_:
        yield sys_


@pytest.mark.kafka
class TestThroughTokenbus:
    async def test_a_real_answer_streams_through_the_broker(self, system: System):
        text, usage, chunks = await stream_text(
            system.gateway_url, QUESTION, model="auto", max_tokens=48, temperature=0
        )
        _english(text)
        assert chunks[-1].choices == [] and usage is not None
        assert 0 < usage.completion_tokens <= 48 and usage.prompt_tokens > 5
        async with httpx.AsyncClient(timeout=10) as client:
            listed = (await client.get(f"{system.gateway_url}/v1/models")).json()
        assert MODEL in [m["id"] for m in listed["data"]]

    @pytest.mark.parametrize("how", ["delete", "hang-up"])
    async def test_cancelling_frees_the_model_slot_at_once(
        self, system: System, localmodel: ServiceProcess, how: str
    ):
        """One slot: a second request can only start once the first one's generation stops.
        The first asks for 1024 tokens (EOS ignored); it is cancelled after 16, and the
        second's first token must come long before the first would have finished."""
        max_tokens, cut_after = 1024, 16
        predicted_before = await _metric(localmodel.url, "llamacpp_tokens_predicted_total")
        stamps: list[float] = []
        finish_reasons: list[str | None] = []
        async with sdk(system.gateway_url) as client, httpx.AsyncClient(timeout=10) as http:
            raw = await client.chat.completions.with_raw_response.create(
                model="small",
                messages=ESSAY,  # type: ignore[arg-type]
                stream=True,
                max_tokens=max_tokens,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},  # passed through to llama.cpp
            )
            request_id = raw.headers["x-request-id"]
            stream = raw.parse()
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    stamps.append(time.monotonic())
                if chunk.choices:
                    finish_reasons.append(chunk.choices[0].finish_reason)
                if len(stamps) == cut_after:
                    if how == "hang-up":
                        break  # leaving `async with` closes the connection
                    resp = await http.delete(f"{system.gateway_url}/v1/streams/{request_id}")
                    assert resp.status_code == 202
                    stamps.append(time.monotonic())  # read on to the end after the cancel
        cancelled_at = time.monotonic() if how == "hang-up" else stamps[cut_after]
        if how == "delete":
            assert finish_reasons[-1] == "cancelled"
        per_token = (stamps[cut_after - 1] - stamps[0]) / (cut_after - 1)
        rest_of_first = (max_tokens - cut_after) * per_token  # what it would still have taken

        await eventually(lambda: _slot_free(localmodel.url), within=GRACE_S + 10)
        freed_after = time.monotonic() - cancelled_at
        predicted = await _metric(localmodel.url, "llamacpp_tokens_predicted_total")
        assert predicted - predicted_before < max_tokens / 2  # llama.cpp stopped generating
        t0 = time.monotonic()
        first_token: list[float] = []
        async with sdk(system.gateway_url) as client:
            stream = await client.chat.completions.create(
                model="small",
                messages=QUESTION,  # type: ignore[arg-type]
                stream=True,
                max_tokens=8,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and not first_token:
                    first_token.append(time.monotonic())
        assert first_token
        second_ttft = first_token[0] - t0
        started_after_cancel = first_token[0] - cancelled_at
        print(
            f"\n{how}: per token {per_token * 1000:.1f} ms, rest of the first answer "
            f"{rest_of_first:.1f} s; slot free {freed_after:.2f} s after the cancel; second "
            f"request's first token {second_ttft:.2f} s after it was sent"
        )
        assert started_after_cancel < rest_of_first / 4
