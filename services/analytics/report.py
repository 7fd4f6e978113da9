"""`tokenbus usage`: ask the usage API, print a table, optionally write CSV."""

import csv
from pathlib import Path
from typing import Any

import httpx
from rich import box
from rich.table import Table

METRICS = (  # field, column title (short: the table should fit 80 columns)
    ("requests", "requests"),
    ("prompt_tokens", "prompt"),
    ("completion_tokens", "completion"),
    ("cost_usd", "cost $"),
    ("ttft_ms_p50", "ttft p50"),
    ("ttft_ms_p95", "ttft p95"),
    ("error_rate", "errors"),
)


class ReportError(RuntimeError):
    """The API refused the query or could not be reached; the message says why."""


def fetch(
    url: str,
    params: dict[str, str | None],
    key: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """GET {url}/v1/usage with the non-empty `params`."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    query = {name: value for name, value in params.items() if value}
    try:
        with httpx.Client(transport=transport, timeout=30) as client:
            resp = client.get(f"{url.rstrip('/')}/v1/usage", params=query, headers=headers)
    except httpx.TransportError as exc:
        raise ReportError(f"cannot reach {url}: {exc} (is `tokenbus analytics` running?)") from exc
    if resp.status_code != 200:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:200]
        raise ReportError(f"HTTP {resp.status_code}: {message}")
    return resp.json()


def key_names(report: dict[str, Any]) -> list[str]:
    groups = report.get("groups") or []
    return list(groups[0]["key"]) if groups else []


def format_value(name: str, value: Any) -> str:
    """One cell as people read it: thousands separators, dollars, percent, '-' for none."""
    if value is None:
        return "-"
    if name == "cost_usd":
        return f"{value:,.6f}" if value < 1 else f"{value:,.2f}"
    if name == "error_rate":
        return f"{value * 100:.1f}%"
    if name.startswith("ttft"):
        return f"{value:,.1f}"
    return f"{value:,}"


def table(report: dict[str, Any]) -> Table:
    """Groups (if any) then the totals, as a rich table."""
    keys = key_names(report)
    out = Table(
        title="tokenbus usage",
        caption="tokens; ttft in ms; errors = failed share",
        box=box.SIMPLE_HEAD,  # light rules: more room for the numbers
    )
    for name in keys:
        out.add_column(name, no_wrap=True)
    for _, title in METRICS:
        out.add_column(title, justify="right", no_wrap=True)
    for group in report.get("groups") or []:
        cells = [str(group["key"][k]) for k in keys]
        out.add_row(*cells, *(format_value(m, group[m]) for m, _ in METRICS))
    if keys:
        out.add_section()
    label = ["total", *[""] * (len(keys) - 1)] if keys else []
    totals = report["totals"]
    out.add_row(*label, *(format_value(m, totals[m]) for m, _ in METRICS), style="bold")
    return out


def write_csv(report: dict[str, Any], path: Path) -> int:
    """One line per group (or the totals when not grouped), raw numbers; return the lines."""
    keys = key_names(report)
    rows = report.get("groups") or [{"key": {}, **report["totals"]}]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*keys, *(m for m, _ in METRICS)])
        for row in rows:
            values = ["" if row[m] is None else row[m] for m, _ in METRICS]
            writer.writerow([*(row["key"][k] for k in keys), *values])
    return len(rows)
