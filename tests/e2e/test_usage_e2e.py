"""Usage end to end: what clients were told they used is what the usage API reports."""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import complete, eventually, sdk, stream_text
from tests.postgres import fresh_database
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

BACKENDS = ("sqlite", "postgresql")


@dataclass
class Seen:
    """What the clients saw: per status, requests and the usage they were sent."""

    requests: Counter[str] = field(default_factory=Counter)
    prompt: Counter[str] = field(default_factory=Counter)
    completion: Counter[str] = field(default_factory=Counter)

    def add(self, status: str, usage: Any | None) -> None:
        self.requests[status] += 1
        if usage is not None:
            self.prompt[status] += usage.prompt_tokens
            self.completion[status] += usage.completion_tokens


@pytest.fixture(scope="module")
async def postgres_url(postgres_server: str) -> str:
    """A fresh database on the session's PostgreSQL, for this module's analytics."""
    return await fresh_database(postgres_server)


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, postgres_url: str) -> Iterator[System]:
    """One tokenbus, and one analytics process per database on its usage topic."""

    def start_analytics(sys_: System) -> None:
        urls = {
            "sqlite": f"sqlite+aiosqlite:///{logs_dir / f'{sys_.prefix}analytics.db'}",
            "postgresql": postgres_url,
        }
        for backend in BACKENDS:  # in this order: system.analytics[i] is BACKENDS[i]
            sys_.start_analytics(urls[backend])

    # Analytics needs only the broker: start it while the rest of the system starts.
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="u",
        alongside=start_analytics,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "10", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "200"},
    ) as sys_:
        yield sys_


async def _cancelled_stream(system: System) -> Any:
    """Stream a long answer, cancel it with DELETE after a few chunks, read it to the end."""
    usage = None
    async with sdk(system.gateway_url) as client, httpx.AsyncClient(timeout=30) as http:
        stream = await client.chat.completions.create(
            model="small",
            messages=[{"role": "user", "content": "tell me a very long story"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=400,
        )
        seen = 0
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen += 1
                if seen == 5:
                    resp = await http.delete(f"{system.gateway_url}/v1/streams/{chunk.id}")
                    assert resp.status_code == 202
            if chunk.choices and chunk.choices[0].finish_reason:
                assert chunk.choices[0].finish_reason == "cancelled"
            usage = chunk.usage or usage
    assert usage is not None and 5 <= usage.completion_tokens < 400
    return usage


@pytest.fixture(scope="module")
async def seen(system: System) -> Seen:
    """Real traffic through the gateway: successes, a failure and a cancel."""
    seen = Seen()
    for n, max_tokens in enumerate((5, 12, 31)):
        _, usage, _ = await stream_text(
            system.gateway_url,
            [{"role": "user", "content": f"question {n}: what is Kafka?"}],
            model="small",
            max_tokens=max_tokens,
        )
        seen.add("ok", usage)
    answer = await complete(
        system.gateway_url, [{"role": "user", "content": "non-streamed"}], model="large",
        max_tokens=7,
    )  # fmt: skip
    seen.add("ok", answer.usage)
    with pytest.raises(openai.BadRequestError) as failed:  # HTTP 400, as the backend said
        await complete(
            system.gateway_url,
            [{"role": "user", "content": "this one fails"}],
            model="small",
            metadata={"llmsim_fault": "status:400"},
        )
    assert failed.value.status_code == 400
    seen.add("failed", None)  # the client got an error, no usage
    seen.add("cancelled", await _cancelled_stream(system))
    return seen


async def _usage(url: str, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{url}/v1/usage", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_usage_api_totals_equal_what_the_clients_received(
    system: System, seen: Seen, backend: str
):
    url = system.analytics[BACKENDS.index(backend)].url
    total = sum(seen.requests.values())

    async def all_recorded() -> bool:
        return (await _usage(url))["totals"]["requests"] >= total

    await eventually(all_recorded, within=20)
    report = await _usage(url, group_by="status")
    totals = report["totals"]
    assert totals["requests"] == total
    assert totals["completion_tokens"] == sum(seen.completion.values())
    assert totals["error_rate"] == seen.requests["failed"] / total
    by_status = {g["key"]["status"]: g for g in report["groups"]}
    assert {s: g["requests"] for s, g in by_status.items()} == dict(seen.requests)
    for status in ("ok", "cancelled"):  # a failed request's client was sent no usage
        assert by_status[status]["prompt_tokens"] == seen.prompt[status], status
        assert by_status[status]["completion_tokens"] == seen.completion[status], status
    assert by_status["failed"]["completion_tokens"] == 0
    tenants = (await _usage(url, group_by="tenant"))["groups"]
    assert [(g["key"]["tenant"], g["requests"]) for g in tenants] == [("dev", total)]
