"""The `tokenbus usage` report: a readable table, a CSV file, and API errors as messages."""

import csv
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from services.analytics.report import ReportError, fetch, format_value, table, write_csv

METRICS = {
    "requests": 1234,
    "prompt_tokens": 56789,
    "completion_tokens": 1000000,
    "cost_usd": 0.0123456,
    "ttft_ms_p50": 41.25,
    "ttft_ms_p95": None,
    "error_rate": 0.125,
}
GROUPED = {
    "totals": {**METRICS, "requests": 2468, "cost_usd": 12.5},
    "groups": [
        {"key": {"tenant": "acme", "status": "ok"}, **METRICS},
        {"key": {"tenant": "globex", "status": "failed"}, **METRICS},
    ],
}


def _text(report: dict) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(table(report))
    return console.export_text()


class TestTable:
    def test_groups_then_a_total_row_with_readable_numbers(self) -> None:
        lines = _text(GROUPED).splitlines()
        header = next(line for line in lines if "requests" in line)
        assert header.index("tenant") < header.index("status") < header.index("requests")
        acme = next(line for line in lines if "acme" in line)
        for cell in ("1,234", "56,789", "1,000,000", "0.012346", "41.2", "12.5%", "-"):
            assert cell in acme
        total = next(line for line in lines if "total" in line)
        assert "2,468" in total and "12.50" in total

    def test_ungrouped_is_one_totals_row(self) -> None:
        text = _text({"totals": METRICS, "groups": []})
        assert "1,234" in text and "tenant" not in text

    @pytest.mark.parametrize(
        ("name", "value", "shown"),
        [
            ("cost_usd", 1234.5, "1,234.50"),
            ("cost_usd", 0.5, "0.500000"),
            ("error_rate", 0.0, "0.0%"),
            ("ttft_ms_p95", None, "-"),
            ("requests", 0, "0"),
        ],
    )
    def test_cells(self, name: str, value: object, shown: str) -> None:
        assert format_value(name, value) == shown


class TestCsv:
    def test_one_line_per_group_with_raw_numbers(self, tmp_path: Path) -> None:
        path = tmp_path / "usage.csv"
        assert write_csv(GROUPED, path) == 2
        rows = list(csv.DictReader(path.read_text().splitlines()))
        assert rows[0]["tenant"] == "acme" and rows[1]["status"] == "failed"
        assert rows[0]["cost_usd"] == "0.0123456" and rows[0]["ttft_ms_p95"] == ""
        assert list(rows[0])[:3] == ["tenant", "status", "requests"]

    def test_ungrouped_writes_the_totals(self, tmp_path: Path) -> None:
        path = tmp_path / "usage.csv"
        assert write_csv({"totals": METRICS, "groups": []}, path) == 1
        [row] = list(csv.DictReader(path.read_text().splitlines()))
        assert row["requests"] == "1234"


class TestFetch:
    def test_api_errors_become_the_message(self) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            assert request.url.params["group_by"] == "day" and "tenant" not in request.url.params
            assert request.headers["authorization"] == "Bearer k"
            body = {"error": {"message": "Invalid value for 'from'", "param": "from"}}
            return httpx.Response(400, json=body)

        with pytest.raises(ReportError, match="HTTP 400: Invalid value for 'from'"):
            fetch(
                "http://x",
                {"group_by": "day", "tenant": None},
                key="k",
                transport=httpx.MockTransport(answer),
            )

    def test_the_report_is_the_json_body(self) -> None:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json=GROUPED))
        assert fetch("http://x/", {}, transport=transport) == GROUPED

    def test_an_unreachable_api_says_so(self) -> None:
        with pytest.raises(ReportError, match="cannot reach"):
            fetch("http://127.0.0.1:9", {})
