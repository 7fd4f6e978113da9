"""Tenants at the edge, with two gateway nodes, a worker and the real broker: API keys, request
ids bound to their tenant, and rate limits that hold across both nodes (docs/security.md)."""

import asyncio
import base64
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.tenants.database import open_store
from services.tenants.limiter import TOKENS
from services.tenants.schema import rate_counters
from services.tenants.settings import TenantStoreSettings
from tests.capabilities import in_ci
from tests.e2e.helpers import eventually
from tests.e2e.sse import iter_frames
from tests.e2e.ws_client import recv, send, ws_url
from tests.postgres import find_bin_dir, fresh_database
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PEPPER, ID_SECRET = "e2e-pepper-0123456789", "e2e-id-secret-0123456789"
# A real deployment seals conversations with its own keyring (the dev one is refused).
KEYRING = "e2e:" + base64.b64encode(b"e2e-tenants!!!!!!!!!!!!!!!!!!!!!").decode()
CACHE_S = 1.0  # the nodes' key cache: a revoke takes effect within this
SLOW = '{"llmsim-large": {"ttft_ms": 0, "tokens_per_second": 50}}'  # "large": 50 tokens/s


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """PostgreSQL (as in production) when it is available, else a SQLite file both nodes share;
    under CI=true PostgreSQL is required (`postgres_server` fails without it)."""
    if (
        in_ci()
        or os.environ.get("TEST_POSTGRES_URL")
        or os.environ.get("DATABASE_URL")
        or find_bin_dir()
    ):
        return await fresh_database(request.getfixturevalue("postgres_server"))
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('tenants')}/tenants.db"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, database_url: str) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="k",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "0",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "0",
            "TOKENBUS_LLMSIM_PROFILES": SLOW,
        },
        gateway_env={
            "TOKENBUS_AUTH_MODE": "keys",
            "TOKENBUS_DATABASE_URL": database_url,
            "TOKENBUS_KEY_PEPPER": PEPPER,
            "TOKENBUS_ID_SECRET": ID_SECRET,
            "TOKENBUS_CONVERSATION_KEYS": KEYRING,
            "TOKENBUS_KEY_CACHE_S": str(CACHE_S),
        },
    ) as sys_:
        yield sys_


@contextlib.asynccontextmanager
async def tenants(database_url: str) -> AsyncIterator[Any]:
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        yield store


async def new_tenant(database_url: str, **limits: int) -> tuple[str, str]:
    """A fresh tenant with `limits` and one key: (tenant, key)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    async with tenants(database_url) as store:
        _, key = await store.create_key(name)
        await store.set_limits(name, **limits)
    return name, key


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def body(max_tokens: int = 1, model: str = "small", stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def away_from_a_minute_boundary(margin_s: float = 15.0) -> None:
    """Limits count in fixed minutes: a burst that straddles one is two bursts."""
    into = time.time() % 60
    if into > 60 - margin_s:
        await asyncio.sleep(60 - into + 0.2)


async def tokens_counted(store: Any, tenant: str, expected: int) -> bool:
    """Whether the tenant's tokens-per-minute counters (every window) add up to `expected`."""
    async with store.engine.connect() as conn:
        query = select(func.coalesce(func.sum(rate_counters.c.value), 0)).where(
            rate_counters.c.tenant == tenant, rate_counters.c.kind == TOKENS
        )
        return int((await conn.execute(query)).scalar_one()) == expected


class TestKeys:
    async def test_no_key_a_wrong_key_and_a_revoked_key_are_401_on_every_node(
        self, system: System, database_url: str
    ) -> None:
        _, key = await new_tenant(database_url)
        async with httpx.AsyncClient(timeout=30) as client:
            for node in system.gateways:
                for headers in ({}, auth("tb-" + "x" * 32), auth("sk-anything")):
                    resp = await client.post(
                        f"{node.url}/v1/chat/completions", json=body(), headers=headers
                    )
                    assert resp.status_code == 401, resp.text
                    assert resp.json()["error"]["code"] == "invalid_api_key"
                ok = await client.post(
                    f"{node.url}/v1/chat/completions", json=body(), headers=auth(key)
                )
                assert ok.status_code == 200, ok.text
            async with tenants(database_url) as store:
                [record] = [k for k in await store.list_keys() if k.hint == key[-4:]]
                assert await store.revoke_key(record.id)
            revoked_at = time.monotonic()

            async def refused_everywhere() -> bool:
                codes = [
                    (await client.get(f"{n.url}/v1/models", headers=auth(key))).status_code
                    for n in system.gateways
                ]
                return codes == [401, 401]

            await eventually(refused_everywhere, within=CACHE_S + 5)
            assert time.monotonic() - revoked_at < CACHE_S + 1
            resp = await client.post(
                f"{system.gateways[1].url}/v1/chat/completions", json=body(), headers=auth(key)
            )
            assert resp.status_code == 401 and key not in resp.text
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(system.gateway_url), subprotocols=[f"bearer.{key}"]):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 401


class TestIsolation:
    async def test_another_tenant_cannot_watch_resume_or_cancel_a_request(
        self, system: System, database_url: str
    ) -> None:
        node_a, node_b = system.gateways
        _, key_a = await new_tenant(database_url)
        _, key_b = await new_tenant(database_url)
        async with (
            httpx.AsyncClient(timeout=60) as client,
            client.stream(
                "POST",
                f"{node_a.url}/v1/chat/completions",
                json=body(60, model="large", stream=True),
                headers=auth(key_a),
            ) as resp,
        ):
            assert resp.status_code == 200
            request_id = resp.headers["x-request-id"]
            frames = iter_frames(resp)
            await anext(frames)  # the stream runs (about 1.2 s)
            missing = request_id[:-1] + ("0" if request_id[-1] != "0" else "1")
            for node in (node_a, node_b):
                for method in ("GET", "DELETE"):
                    theirs = await client.request(
                        method, f"{node.url}/v1/streams/{request_id}", headers=auth(key_b)
                    )
                    nothing = await client.request(
                        method, f"{node.url}/v1/streams/{missing}", headers=auth(key_b)
                    )
                    assert theirs.status_code == nothing.status_code == 404
                    assert theirs.text.replace(request_id, "ID") == nothing.text.replace(
                        missing, "ID"
                    )
            async with connect(ws_url(node_b.url), subprotocols=[f"bearer.{key_b}"]) as conn:  # type: ignore[list-item]
                for kind in ("resume", "cancel"):
                    await send(conn, type=kind, id=kind, request_id=request_id)
                    error = await recv(conn)
                    assert (error["code"], error["id"]) == ("stream_not_found", kind)
            # Its own tenant watches it on the other node, to its normal end: nothing cancelled.
            watch = await client.get(f"{node_b.url}/v1/streams/{request_id}", headers=auth(key_a))
            assert watch.status_code == 200
            assert '"finish_reason":"length"' in watch.text and watch.text.rstrip().endswith(
                "data: [DONE]"
            )
            async for _ in frames:
                pass


class TestLimits:
    async def test_a_burst_over_rpm_across_both_nodes_refuses_exactly_the_excess(
        self, system: System, database_url: str
    ) -> None:
        _, key = await new_tenant(database_url, rpm=20)
        await away_from_a_minute_boundary()
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{system.gateways[i % 2].url}/v1/chat/completions",
                        json=body(),
                        headers=auth(key),
                    )
                    for i in range(30)
                )
            )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 20 + [429] * 10
        for resp in responses:
            assert resp.headers["x-ratelimit-limit-requests"] == "20"
            if resp.status_code == 429:
                assert 1 <= int(resp.headers["retry-after"]) <= 60
                assert resp.headers["x-ratelimit-remaining-requests"] == "0"
                assert resp.json()["error"]["code"] == "rate_limit_exceeded"
        remaining = sorted(
            int(r.headers["x-ratelimit-remaining-requests"])
            for r in responses
            if r.status_code == 200
        )
        assert remaining == list(range(20))  # one shared count, whichever node answered

    async def test_concurrent_streams_are_limited_across_nodes_and_freed_at_the_end(
        self, system: System, database_url: str
    ) -> None:
        _, key = await new_tenant(database_url, concurrency=2)
        node_a, node_b = system.gateways
        async with httpx.AsyncClient(timeout=60) as client:

            async def stream(url: str, opened: asyncio.Event) -> int:
                async with client.stream(
                    "POST",
                    f"{url}/v1/chat/completions",
                    json=body(60, model="large", stream=True),
                    headers=auth(key),
                ) as resp:
                    opened.set()
                    async for _ in resp.aiter_bytes():
                        pass
                    return resp.status_code

            opened = [asyncio.Event(), asyncio.Event()]
            running = [
                asyncio.create_task(stream(url, ev))
                for url, ev in zip((node_a.url, node_b.url), opened, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 30)
            for node in (node_a, node_b):
                third = await client.post(
                    f"{node.url}/v1/chat/completions", json=body(), headers=auth(key)
                )
                assert third.status_code == 429, third.text
                assert third.headers["retry-after"] == "1"
            assert await asyncio.gather(*running) == [200, 200]

            async def admitted_again() -> bool:
                resp = await client.post(
                    f"{node_b.url}/v1/chat/completions", json=body(), headers=auth(key)
                )
                return resp.status_code == 200

            await eventually(admitted_again, within=5)

    async def test_the_token_estimate_is_corrected_by_the_real_usage(
        self, system: System, database_url: str
    ) -> None:
        # No max_tokens: admission charges 256 for the answer; llmsim answers with 64 tokens.
        tenant, key = await new_tenant(database_url, tpm=1000)
        await away_from_a_minute_boundary()
        request = {"model": "small", "messages": [{"role": "user", "content": "Hi there!"}]}
        async with httpx.AsyncClient(timeout=60) as client:
            url = f"{system.gateways[0].url}/v1/chat/completions"
            first = await client.post(url, json=request, headers=auth(key))
            assert first.status_code == 200
            assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - (3 + 256))
            used = first.json()["usage"]["total_tokens"]
            # The correction is written after the answer is sent: wait until the tenant's
            # token counter holds the real usage instead of the estimate.
            async with tenants(database_url) as store:
                await eventually(lambda: tokens_counted(store, tenant, used), within=10)
            second = await client.post(url, json=request, headers=auth(key))
        assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - used - (3 + 256))

    async def test_a_websocket_refusal_is_an_error_with_retry_after(
        self, system: System, database_url: str
    ) -> None:
        _, key = await new_tenant(database_url, rpm=1)
        await away_from_a_minute_boundary()
        async with connect(ws_url(system.gateways[1].url)) as conn:
            await send(conn, type="auth", api_key=key)
            assert (await recv(conn))["action"] == "auth"
            await send(conn, type="chat", id="ok", **body())
            assert (await recv(conn))["type"] == "ack"
            await send(conn, type="chat", id="over", **body())
            while (frame := await recv(conn))["type"] != "error":
                pass
            assert (frame["code"], frame["id"], frame["retryable"]) == (
                "rate_limit_exceeded",
                "over",
                True,
            )
            assert 1 <= frame["retry_after_s"] <= 60
