"""PostgreSQL stopped for 20 s under a keys-mode system (two gateway nodes, analytics on the
same server), on the real broker:
- a key checked before the outage keeps working on both nodes (cached keys);
- rate limits follow each node's `limits_when_database_down`: `open` admits uncounted,
  `closed` answers a retryable 503 in OpenAI's shape; an unknown key gets a 503, never a 500
  and never a 200; both nodes stay ready (the database is advisory);
- analytics waits the outage out and then stores every usage record exactly once.

A PostgreSQL of its own (not the session's), since it is the one thing stopped here."""

import asyncio
import base64
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from services.analytics.store import usage
from services.common.database import make_engine
from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings
from tests.e2e.helpers import eventually
from tests.postgres import LocalPostgres, find_bin_dir, own_postgres
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

AWAY_S = 20.0
PEPPER, ID_SECRET = "chaos-pepper-0123456789", "chaos-id-secret-0123456789"
KEYRING = "chaos:" + base64.b64encode(b"chaos-chaos-chaos-chaos-chaos!!!").decode()


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    if find_bin_dir() is None:
        pytest.fail("PostgreSQL binaries are required: apt-get install -y postgresql")
    with own_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, postgres: LocalPostgres) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="pgstop",
        gateways=0,
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "0", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "0"},
        gateway_env={
            "TOKENBUS_AUTH_MODE": "keys",
            "TOKENBUS_DATABASE_URL": postgres.url,
            "TOKENBUS_KEY_PEPPER": PEPPER,
            "TOKENBUS_ID_SECRET": ID_SECRET,
            "TOKENBUS_CONVERSATION_KEYS": KEYRING,
            "TOKENBUS_KEY_CACHE_S": "1",
        },
    ) as sys_:
        # Node 0 admits uncounted while limits cannot be checked; node 1 refuses.
        for partitions, policy in (("0,2", "open"), ("1,3", "closed")):
            sys_.gateway_env["TOKENBUS_LIMITS_WHEN_DATABASE_DOWN"] = policy
            sys_.start_gateway(partitions)
        for gateway in sys_.gateways:
            gateway.wait_ready(timeout=90)
        sys_.start_analytics(postgres.url)
        yield sys_


async def _new_key(database_url: str) -> str:
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        _, key = await store.create_key(tenant)
        await store.set_limits(tenant, rpm=10_000)  # limited: every request asks the limiter
    return key


async def _ask(client: httpx.AsyncClient, url: str, key: str, n: int) -> httpx.Response:
    return await client.post(
        f"{url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={
            "model": "small",
            "messages": [{"role": "user", "content": f"Database blip {n}"}],
            "max_tokens": 8,
        },
    )


def _is_openai_503(resp: httpx.Response) -> bool:
    error = resp.json().get("error", {})
    return (
        resp.status_code == 503
        and error.get("code") == "service_unavailable"
        and bool(error.get("message"))
        and "retry-after" in resp.headers
    )


async def _stored(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(select(usage.c.request_id))
            return Counter(row.request_id for row in rows)
    finally:
        await engine.dispose()


async def _tokens_stored(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.sum(usage.c.total_tokens)))).scalar_one())
    finally:
        await engine.dispose()


async def test_a_database_outage_keeps_keys_follows_the_limits_policy_and_loses_no_usage(
    system: System, postgres: LocalPostgres
) -> None:
    key = await _new_key(postgres.url)
    open_node, closed_node = (g.url for g in system.gateways)
    answered: dict[str, int] = {}  # request id -> total tokens the client was told
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=30) as client:

        def took(resp: httpx.Response) -> None:
            body = resp.json()
            answered[body["id"]] = body["usage"]["total_tokens"]

        for n, url in enumerate((open_node, closed_node)):  # both nodes know the key now
            resp = await _ask(client, url, key, n)
            assert resp.status_code == 200, resp.text
            took(resp)

        postgres.stop()
        back_at = time.monotonic() + AWAY_S
        n = 100
        while time.monotonic() < back_at:
            n += 1
            opened, closed, stranger = await asyncio.gather(
                _ask(client, open_node, key, n),
                _ask(client, closed_node, key, n),
                _ask(client, open_node, "tb-" + "z" * 32, n),
            )
            assert opened.status_code == 200, opened.text  # cached key, limits open
            took(opened)
            assert _is_openai_503(closed), closed.text  # cached key, limits closed
            assert _is_openai_503(stranger), stranger.text  # unknown: cannot say 401 or 200
            for url in (open_node, closed_node):
                ready = await client.get(f"{url}/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["advisory"] == {"database": False}
            outcomes["during"] += 1
        postgres.start()

        async def closed_node_answers() -> bool:
            resp = await _ask(client, closed_node, key, n + 1)
            if resp.status_code == 200:
                took(resp)
            return resp.status_code == 200

        await eventually(closed_node_answers, within=30)

    # Analytics caught up: every answered request stored once, tokens equal.
    async def caught_up() -> bool:
        return set(answered) <= set(await _stored(postgres.url))

    await eventually(caught_up, within=60)
    stored = await _stored(postgres.url)
    assert all(stored[r] == 1 for r in answered), stored
    assert sum(stored.values()) == len(answered)  # nothing else, nothing twice
    assert await _tokens_stored(postgres.url) == sum(answered.values())
    print(f"postgres stopped {AWAY_S:.0f} s: {outcomes['during']} rounds, {len(answered)} stored")
