"""GET /v1/usage on SQLite: totals, groups, percentiles, filters, errors and key scoping."""

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from contracts import UsageRecorded
from services.analytics.aggregate import percentile
from services.analytics.api import tenant_scope
from tests.unit.analytics.conftest import client, store
from tests.usage_events import T0, usage_events

# Two hours of traffic from T0, 30 s apart; every third request came in by the Responses API.
EVENTS = [
    e.model_copy(update={"api": "responses"}) if n % 3 == 0 else e
    for n, e in enumerate(usage_events(240))
]
KEY_OF: dict[str, Callable[[UsageRecorded], str]] = {
    "tenant": lambda e: e.tenant_id,
    "model": lambda e: e.model,
    "route": lambda e: e.route,
    "tier": lambda e: e.tier,
    "status": lambda e: e.status,
    "api": lambda e: e.api,
    "hour": lambda e: e.started_at.strftime("%Y-%m-%dT%H:00:00Z"),
    "day": lambda e: e.started_at.strftime("%Y-%m-%d"),
}


def _metrics(events: Sequence[UsageRecorded]) -> dict[str, Any]:
    ttfts = sorted(e.ttft_ms for e in events if e.ttft_ms is not None)
    return {
        "requests": len(events),
        "prompt_tokens": sum(e.usage.prompt_tokens for e in events),
        "completion_tokens": sum(e.usage.completion_tokens for e in events),
        "cost_usd": sum(e.cost_usd for e in events),
        "ttft_ms_p50": percentile(ttfts, 0.5),
        "ttft_ms_p95": percentile(ttfts, 0.95),
        "error_rate": sum(e.status == "failed" for e in events) / len(events),
    }


def _expected_groups(events: Sequence[UsageRecorded], keys: Sequence[str]) -> list[Any]:
    grouped: dict[tuple[str, ...], list[UsageRecorded]] = defaultdict(list)
    for event in events:
        grouped[tuple(KEY_OF[k](event) for k in keys)].append(event)
    return [
        {"key": dict(zip(keys, key, strict=True)), **_metrics(grouped[key])}
        for key in sorted(grouped)
    ]


# The oracle above, pinned to numbers worked out by hand: linear interpolation between closest
# ranks (PostgreSQL's percentile_cont, numpy's default "linear"), position q * (n - 1).
@pytest.mark.parametrize(
    ("ordered", "q", "expected"),
    [
        ([1, 2, 3, 4], 0.5, 2.5),  # position 1.5: halfway from 2 to 3
        ([1, 2, 3, 4], 0.95, 3.85),  # position 2.85
        ([10, 20, 30, 40, 50], 0.5, 30),  # an odd count: the middle value itself
        ([10, 20, 30, 40, 50], 0.95, 48),  # position 3.8: 40 + 0.8 * 10
        ([15, 20, 35, 40, 50], 0.4, 29),  # position 1.6: 20 + 0.6 * 15
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.25, 7.25),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.5, 9),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.75, 14.5),
        ([3, 6, 7, 8, 8, 10, 13, 15, 16, 20], 0.95, 18.2),  # position 8.55
        ([7], 0.95, 7),
        ([1, 2, 3, 4], 0.0, 1),
        ([1, 2, 3, 4], 1.0, 4),
    ],
)
def test_percentile_interpolates_linearly(ordered: list[float], q: float, expected: float) -> None:
    assert percentile(ordered, q) == pytest.approx(expected, abs=1e-12)


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 0.5) is None


@pytest.fixture
async def app(analytics_app):
    app = await analytics_app()
    assert await store(app).insert(EVENTS) == len(EVENTS)
    return app


async def _get(app: Any, expect: int = 200, headers: dict[str, str] | None = None, **params):
    async with client(app) as http:
        resp = await http.get("/v1/usage", params=params, headers=headers or {})
    assert resp.status_code == expect, resp.text
    return resp.json()


class TestAggregates:
    async def test_totals_equal_the_events(self, app) -> None:
        assert await _get(app) == {"totals": _metrics(EVENTS), "groups": []}

    @pytest.mark.parametrize("group_by", [*KEY_OF, "tenant,status", "day,model,tier", "api,tenant"])
    async def test_groups_equal_the_events_grouped(self, app, group_by: str) -> None:
        body = await _get(app, group_by=group_by)
        assert body["groups"] == _expected_groups(EVENTS, group_by.split(","))
        assert body["totals"] == _metrics(EVENTS)

    async def test_filters_and_a_half_open_time_range(self, app) -> None:
        start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=90)
        chosen = [
            e
            for e in EVENTS
            if start <= e.started_at < end and e.tenant_id == "acme" and e.tier == "small"
        ]
        body = await _get(
            app,
            **{"from": start.isoformat(), "to": end.isoformat().replace("+00:00", "Z")},
            tenant="acme",
            model="llmsim-small",
        )
        assert body["totals"] == _metrics(chosen)

    async def test_group_by_api_splits_chat_from_responses(self, app) -> None:
        body = await _get(app, group_by="api")
        chat = [e for e in EVENTS if e.api == "chat"]
        responses = [e for e in EVENTS if e.api == "responses"]
        assert len(chat) == 160 and len(responses) == 80
        assert body["groups"] == [
            {"key": {"api": "chat"}, **_metrics(chat)},
            {"key": {"api": "responses"}, **_metrics(responses)},
        ]

    async def test_an_api_filter_keeps_that_api_only(self, app) -> None:
        responses = [e for e in EVENTS if e.api == "responses" and e.tenant_id == "acme"]
        body = await _get(app, api="responses", tenant="acme", group_by="api")
        assert body["totals"] == _metrics(responses)
        assert [g["key"] for g in body["groups"]] == [{"api": "responses"}]

    async def test_nothing_matching_is_zeros_not_an_error(self, app) -> None:
        body = await _get(app, tenant="nobody", group_by="model")
        assert body["groups"] == []
        assert body["totals"] == {
            "requests": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "ttft_ms_p50": None,
            "ttft_ms_p95": None,
            "error_rate": 0.0,
        }

    async def test_a_group_without_any_ttft_has_no_percentiles(self, app) -> None:
        body = await _get(app, status="failed", group_by="status")
        assert body["groups"][0]["ttft_ms_p50"] is None
        assert body["groups"][0]["error_rate"] == 1.0


class TestErrors:
    @pytest.mark.parametrize(
        ("params", "param"),
        [
            ({"from": "noon"}, "from"),
            ({"group_by": "week"}, "group_by"),
            ({"x": "1"}, "x"),
            ({"api": "completions"}, "api"),
        ],
    )
    async def test_bad_parameters_are_400_in_openai_shape(self, app, params, param) -> None:
        body = await _get(app, 400, **params)
        error = body["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_value" and error["message"]

    async def test_unknown_path_is_404_in_openai_shape(self, app) -> None:
        async with client(app) as http:
            resp = await http.get("/v1/nope")
        assert resp.status_code == 404 and resp.json()["error"]["message"]


class TestAccess:
    async def test_with_an_admin_key_only_its_bearer_sees_usage(self, analytics_app) -> None:
        app = await analytics_app(admin_key="s3cret")
        await store(app).insert(EVENTS)
        assert (await _get(app, 401))["error"]["code"] == "invalid_api_key"
        await _get(app, 401, headers={"authorization": "Bearer wrong"})
        body = await _get(app, headers={"authorization": "Bearer s3cret"})
        assert body["totals"]["requests"] == len(EVENTS)

    async def test_a_tenant_scope_narrows_every_answer_to_that_tenant(self, app) -> None:
        app.dependency_overrides[tenant_scope] = lambda: "acme"  # what acme's key returns
        acme = [e for e in EVENTS if e.tenant_id == "acme"]
        body = await _get(app, group_by="tenant")
        assert body["totals"] == _metrics(acme)
        assert [g["key"] for g in body["groups"]] == [{"tenant": "acme"}]
        assert (await _get(app, tenant="acme"))["totals"] == _metrics(acme)
        assert (await _get(app, 403, tenant="globex"))["error"]["param"] == "tenant"


class TestKeys:
    """Keys mode: keys from `tokenbus keys create` scope the usage API."""

    async def test_a_tenant_key_sees_its_tenant_and_an_admin_key_every_tenant(
        self, analytics_app
    ) -> None:
        app = await analytics_app(auth_mode="keys")
        await store(app).insert(EVENTS)
        tenants = app.state.tenant_store
        _, acme = await tenants.create_key("acme")
        _, admin = await tenants.create_key("ops", admin=True)
        assert (await _get(app, 401))["error"]["code"] == "invalid_api_key"
        await _get(app, 401, headers={"authorization": "Bearer tb-" + "x" * 32})
        body = await _get(app, group_by="tenant", headers={"authorization": f"Bearer {acme}"})
        assert [g["key"] for g in body["groups"]] == [{"tenant": "acme"}]
        everyone = await _get(app, headers={"authorization": f"Bearer {admin}"})
        assert everyone["totals"]["requests"] == len(EVENTS)

    async def test_a_revoked_key_is_refused(self, analytics_app) -> None:
        app = await analytics_app(auth_mode="keys")
        record, key = await app.state.tenant_store.create_key("acme")
        await _get(app, headers={"authorization": f"Bearer {key}"})
        assert await app.state.tenant_store.revoke_key(record.id)
        await _get(app, 401, headers={"authorization": f"Bearer {key}"})


def test_events_span_two_hours() -> None:
    assert {KEY_OF["hour"](e) for e in EVENTS} == {"2025-03-01T10:00:00Z", "2025-03-01T11:00:00Z"}
    assert isinstance(EVENTS[0].started_at, datetime)
