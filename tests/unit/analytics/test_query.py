"""Query parameters of GET /v1/usage: parsed once, bad ones named."""

from datetime import UTC, datetime

import pytest

from services.analytics.query import QueryError, UsageQuery, parse_query


class TestParse:
    def test_no_parameters_is_everything_ungrouped(self) -> None:
        assert parse_query({}) == UsageQuery()

    def test_times_filters_and_groups(self) -> None:
        query = parse_query(
            {
                "from": "2025-03-01",
                "to": "2025-03-02T12:30:00+02:00",
                "tenant": "acme",
                "model": "llmsim-small",
                "route": "score",
                "status": "failed",
                "api": "responses",
                "group_by": "day, Tenant,day,API",
            }
        )
        assert query.start == datetime(2025, 3, 1, tzinfo=UTC)
        assert query.end == datetime(2025, 3, 2, 10, 30, tzinfo=UTC)
        assert (query.tenant, query.model, query.route, query.status, query.api) == (
            "acme",
            "llmsim-small",
            "score",
            "failed",
            "responses",
        )
        assert query.group_by == ("day", "tenant", "api")  # lower-cased, de-duplicated, in order

    def test_z_suffix_and_naive_times_are_utc(self) -> None:
        query = parse_query({"from": "2025-03-01T10:00:00Z", "to": "2025-03-01T11:00:00"})
        assert query.start == datetime(2025, 3, 1, 10, tzinfo=UTC)
        assert query.end == datetime(2025, 3, 1, 11, tzinfo=UTC)

    def test_empty_values_are_unset(self) -> None:
        assert parse_query({"tenant": " ", "group_by": ",", "from": ""}) == UsageQuery()

    @pytest.mark.parametrize(
        ("params", "param"),
        [
            ({"from": "yesterday"}, "from"),
            ({"to": "2025-13-01"}, "to"),
            ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
            ({"group_by": "day,week"}, "group_by"),
            ({"status": "done"}, "status"),
            ({"api": "chat.completions"}, "api"),
            ({"tennant": "acme"}, "tennant"),
        ],
    )
    def test_bad_parameters_are_named(self, params: dict[str, str], param: str) -> None:
        with pytest.raises(QueryError) as caught:
            parse_query(params)
        assert caught.value.param == param

    def test_for_tenant_narrows_the_query(self) -> None:
        assert parse_query({"group_by": "model"}).for_tenant("acme").tenant == "acme"
