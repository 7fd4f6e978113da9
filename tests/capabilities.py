"""What some tests need from the machine (PostgreSQL, Chromium), and what happens without it.

Outside CI a missing capability skips the tests that need it, and the end of the run says so
(`summarise`, from tests/conftest.py). Under `CI=true` it fails them instead: CI that skipped
the browser or the PostgreSQL tests would pass without having run them.
"""

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import pytest

POSTGRESQL = ("PostgreSQL", "apt-get install -y postgresql")
CHROMIUM = ("Chromium", "apt-get install -y chromium")
PROMTOOL = ("promtool", "make promtool (needs Go)")

_PREFIX = "missing capability: "
_REASON = re.compile(re.escape(_PREFIX) + r"(?P<name>.+?) is not installed \((?P<hint>.+)\)")


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    """Whether this run is CI's: `CI` set to true (GitHub Actions, GitLab and others set it)."""
    value = (os.environ if env is None else env).get("CI", "")
    return value.strip().lower() in ("1", "true", "yes")


def missing_capability(
    name: str, hint: str, env: Mapping[str, str] | None = None, *, required_by: str | None = None
) -> NoReturn:
    """Skip the test that needs `name`, or fail it under `CI=true` (`env`, default os.environ)
    or when `required_by` says what needs it anyway; `hint` says how to install it."""
    why = "CI=true" if in_ci(env) else required_by
    if why:
        pytest.fail(f"{why} but {name} is not installed: {hint}", pytrace=False)
    pytest.skip(f"{_PREFIX}{name} is not installed ({hint})")


def skipped_for(reports: Iterable[Any]) -> dict[tuple[str, str], int]:
    """(capability, install hint) -> how many of these skipped test reports it caused."""
    counts: Counter[tuple[str, str]] = Counter()
    for report in reports:
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple | list) and len(longrepr) == 3:  # (path, line, reason)
            if found := _REASON.search(str(longrepr[2])):
                counts[(found["name"], found["hint"])] += 1
    return dict(counts)


def summarise(terminalreporter: Any) -> None:
    """A section at the end of the run: each missing capability, its skips, how to install it."""
    counts = skipped_for(terminalreporter.stats.get("skipped", []))
    if not counts:
        return
    terminalreporter.section("missing capabilities", sep="=", yellow=True, bold=True)
    for (name, hint), n in sorted(counts.items()):
        tests = "test" if n == 1 else "tests"
        terminalreporter.line(f"{name} is not installed: {n} {tests} skipped. Install: {hint}")
    terminalreporter.line("(under CI=true these tests fail instead of skipping)")
