"""A missing PostgreSQL or Chromium: a skip on a developer's machine, a failure in CI."""

from types import SimpleNamespace

import pytest

from tests.capabilities import CHROMIUM, POSTGRESQL, in_ci, missing_capability, skipped_for


@pytest.mark.parametrize(
    ("env", "ci"),
    [
        ({}, False),
        ({"CI": ""}, False),
        ({"CI": "false"}, False),
        ({"CI": "0"}, False),
        ({"CI": "true"}, True),
        ({"CI": "True"}, True),
        ({"CI": "1"}, True),
    ],
)
def test_ci_is_the_ci_variable_set_to_true(env: dict[str, str], ci: bool) -> None:
    assert in_ci(env) is ci


def test_outside_ci_a_missing_capability_is_a_skip_that_names_the_fix() -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        missing_capability(*POSTGRESQL, env={})
    assert str(skipped.value) == (
        "missing capability: PostgreSQL is not installed (apt-get install -y postgresql)"
    )


def test_under_ci_a_missing_capability_fails_the_test() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        missing_capability(*POSTGRESQL, env={"CI": "true"})
    assert str(failed.value) == (
        "CI=true but PostgreSQL is not installed: apt-get install -y postgresql"
    )


def test_a_capability_something_asked_for_fails_outside_ci_too() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        missing_capability(*CHROMIUM, env={}, required_by="TOKENBUS_SCREENSHOT is set")
    assert str(failed.value) == (
        "TOKENBUS_SCREENSHOT is set but Chromium is not installed: apt-get install -y chromium"
    )


def test_the_summary_counts_the_skips_per_missing_capability() -> None:
    def skip(reason: str) -> SimpleNamespace:
        return SimpleNamespace(longrepr=("tests/x.py", 1, f"Skipped: {reason}"))

    reports = [
        skip("missing capability: PostgreSQL is not installed (apt-get install -y postgresql)"),
        skip("missing capability: PostgreSQL is not installed (apt-get install -y postgresql)"),
        skip("missing capability: Chromium is not installed (apt-get install -y chromium)"),
        skip("needs a GPU"),  # some other skip: not a capability's
        SimpleNamespace(longrepr=None),
    ]
    assert skipped_for(reports) == {
        ("PostgreSQL", "apt-get install -y postgresql"): 2,
        ("Chromium", "apt-get install -y chromium"): 1,
    }
