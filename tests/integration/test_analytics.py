"""Analytics on a real broker and both databases: every usage record stored exactly once."""

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from sqlalchemy import func, select

from contracts import DeadLetter, Topics, UsageRecorded
from services.analytics.aggregate import percentile
from services.analytics.app import create_app
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import usage
from tests.fakes import eventually
from tests.kafka_records import read_topic
from tests.usage_events import expected_counts, expected_totals, usage_events

pytestmark = pytest.mark.kafka


@pytest.fixture
def make_app(kafka_bootstrap: str, topic_prefix: str, database_url: str):
    def make(**overrides: Any) -> FastAPI:
        settings = AnalyticsSettings(
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=topic_prefix,
            group_id=f"{topic_prefix}analytics",
            database_url=database_url,
            batch_wait_ms=20,
            auth_mode="open",  # the consumer is under test here, not keys
            **overrides,
        )
        return create_app(settings)

    return make


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        yield app


async def _get(app: FastAPI, path: str, **params: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as client:
        return await client.get(path, params=params)


async def _report(app: FastAPI, **params: str) -> dict[str, Any]:
    resp = await _get(app, "/v1/usage", **params)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def _counted(app: FastAPI, outcome: str) -> float:
    text = (await _get(app, "/metrics")).text
    match = re.search(rf'tokenbus_analytics_records_total{{outcome="{outcome}"}} (\S+)', text)
    return float(match[1]) if match else 0.0


async def _until(app: FastAPI, within: float = 30.0, **outcomes: int) -> None:
    async def reached() -> bool:
        return all([await _counted(app, o) >= n for o, n in outcomes.items()])

    await eventually(reached, within=within)


async def _publish(producer: AIOKafkaProducer, topic: str, events: Sequence[UsageRecorded]) -> None:
    sent = [
        await producer.send(topic, e.model_dump_json().encode(), key=e.tenant_id.encode())
        for e in events
    ]
    await asyncio.gather(*sent)


def _assert_totals(report: dict[str, Any], events: Sequence[UsageRecorded]) -> None:
    want = expected_totals(events)
    totals = report["totals"]
    assert totals["requests"] == want["requests"]
    assert totals["prompt_tokens"] == want["prompt_tokens"]
    assert totals["completion_tokens"] == want["completion_tokens"]
    assert totals["cost_usd"] == want["cost_usd"]  # dyadic costs: exact in any order
    assert totals["error_rate"] == want["failed"] / want["requests"]
    ttfts = sorted(e.ttft_ms for e in events if e.ttft_ms is not None)
    assert totals["ttft_ms_p50"] == pytest.approx(percentile(ttfts, 0.5), rel=1e-9)
    assert totals["ttft_ms_p95"] == pytest.approx(percentile(ttfts, 0.95), rel=1e-9)


class TestEveryRecordStoredOnce:
    async def test_totals_groups_duplicates_and_a_rebuild_match_the_published_events(
        self, topics: Topics, producer: AIOKafkaProducer, make_app
    ):
        events = usage_events(300)
        await _publish(producer, topics.usage.name, events)
        async with running(make_app()) as app:
            await _until(app, stored=300)
            report = await _report(app, group_by="tenant,status")
            _assert_totals(report, events)
            for field, key in (("tenant_id", "tenant"), ("model", "model"), ("route", "route"),
                               ("status", "status")):  # fmt: skip
                groups = (await _report(app, group_by=key))["groups"]
                assert {g["key"][key]: g["requests"] for g in groups} == expected_counts(
                    events, field
                )
            acme_ok = [e for e in events if e.tenant_id == "acme" and e.status == "ok"]
            _assert_totals(await _report(app, tenant="acme", status="ok"), acme_ok)
            pairs = {(g["key"]["tenant"], g["key"]["status"]) for g in report["groups"]}
            assert pairs == {(e.tenant_id, e.status) for e in events}
            hours = (await _report(app, group_by="hour"))["groups"]
            assert sum(g["requests"] for g in hours) == 300
            assert hours[0]["key"]["hour"] == "2025-03-01T10:00:00Z"

            await _publish(producer, topics.usage.name, events)  # every event a second time
            await _until(app, duplicates=300)
            _assert_totals(await _report(app), events)

        # A rebuild: tables recreated, the topic (600 records) read again from offset 0.
        async with running(make_app(from_beginning=True)) as app:
            await _until(app, stored=300, duplicates=300)
            _assert_totals(await _report(app), events)


class TestRestart:
    async def test_stopping_mid_load_and_starting_again_loses_and_duplicates_nothing(
        self, topics: Topics, producer: AIOKafkaProducer, make_app
    ):
        events = usage_events(3000, seed=11)

        async def trickle() -> None:
            for k in range(0, len(events), 100):
                await _publish(producer, topics.usage.name, events[k : k + 100])
                await asyncio.sleep(0.05)

        publishing = asyncio.create_task(trickle())
        async with running(make_app(batch_max=50)) as app:
            await _until(app, stored=500)
        assert not publishing.done(), "stopped while events were still arriving"
        await publishing
        async with running(make_app(batch_max=50)) as app:
            report = await _report(app)  # what the first run stored
            assert 500 <= report["totals"]["requests"] < 3000

            async def all_stored() -> bool:
                return (await _report(app))["totals"]["requests"] >= 3000

            await eventually(all_stored, within=30)
            _assert_totals(await _report(app), events)
            async with app.state.engine.connect() as conn:
                distinct = select(func.count(func.distinct(usage.c.request_id)))
                assert (await conn.execute(distinct)).scalar_one() == 3000


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = (await admin.list_consumer_group_offsets(group, partitions=[tp])).get(tp)
        return meta.offset if meta is not None else -1
    finally:
        await admin.close()


class TestPoisonRecords:
    async def test_invalid_records_go_to_the_dlq_with_the_reason_and_the_next_is_stored(
        self, kafka_bootstrap: str, topic_prefix: str, topics: Topics, producer, make_app
    ):
        raws = [b"{not json", b'{"type": "usage_recorded", "request_id": "r"}']
        bad = [
            await (await producer.send(topics.usage.name, raw, key=b"acme", partition=0))
            for raw in raws
        ]
        [event] = usage_events(1)
        good = await (
            await producer.send(
                topics.usage.name, event.model_dump_json().encode(), key=b"acme", partition=0
            )
        )
        async with running(make_app()) as app:
            await _until(app, stored=1, dead_lettered=2)
            assert (await _report(app))["totals"]["requests"] == 1
            letters = [
                DeadLetter.model_validate_json(record.value)
                for record in await read_topic(
                    kafka_bootstrap, topics.usage_dlq.name, until=2, timeout_s=20
                )
            ]
            assert [letter.source_offset for letter in letters] == [m.offset for m in bad]
            assert [letter.value for letter in letters] == [raw.decode() for raw in raws]
            for letter in letters:
                assert letter.source_topic == topics.usage.name and letter.consumer == "analytics"
                assert letter.reason.startswith("invalid UsageRecorded")
            assert "Invalid JSON" in letters[0].reason
            assert "tenant_id" in letters[1].reason  # a required field it lacks
            tp = TopicPartition(topics.usage.name, 0)

            async def committed_past_all() -> bool:
                group = f"{topic_prefix}analytics"
                return await _committed(kafka_bootstrap, group, tp) == good.offset + 1

            await eventually(committed_past_all, within=10)
