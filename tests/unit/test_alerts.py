"""infra/prometheus/alerts.yml: well-formed rules over metrics the services export, loaded by
Prometheus in compose. (`promtool check rules` checks the PromQL itself where it is installed:
`make promtool`.)"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests import capabilities
from tests.capabilities import missing_capability
from tests.unit.test_compose import SERVICES, _exposed_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra/prometheus/alerts.yml"
PROMTOOL = ROOT / ".tools/bin/promtool"
# Prometheus's own series, not the services'.
PROMETHEUS_OWN = {"up"}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _metrics(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # selectors hold label names and values
    expr = re.sub(r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w.startswith(("tokenbus_", "gen_ai_", "faststream_")) or w == "up"}


def test_each_rule_is_complete() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_the_rules_cover_what_ops_must_hear_about() -> None:
    exprs = " ".join(r["expr"] for r in _rules())
    assert "gen_ai_server_time_to_first_token_seconds_bucket" in exprs  # slow first tokens
    assert 'error_type!=""' in exprs  # failing requests
    assert 'up{job="inference"}' in exprs  # no workers


async def test_every_expression_names_only_exported_metrics() -> None:
    exposed = await _exposed_metrics() | PROMETHEUS_OWN
    for rule in _rules():
        missing = _metrics(rule["expr"]) - exposed
        assert not missing, f"{rule['alert']} queries metrics nobody exports: {sorted(missing)}"


def test_prometheus_in_compose_loads_the_rules() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    [path] = config["rule_files"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in SERVICES["prometheus"]["volumes"])  # type: ignore[misc]
    assert mounts.get("./infra/prometheus/alerts.yml") == path


def test_promtool_accepts_the_rules() -> None:
    promtool = str(PROMTOOL) if PROMTOOL.exists() else shutil.which("promtool")
    if promtool is None:
        missing_capability(*capabilities.PROMTOOL)  # make test installs it first
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
