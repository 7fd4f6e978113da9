"""`tokenbus keys` and `tokenbus tenants`, and the development key of `tokenbus dev`."""

import asyncio
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from services.tenants.cli import register_commands
from services.tenants.database import open_store
from services.tenants.dev import ensure_dev_key
from services.tenants.settings import TenantStoreSettings

app = typer.Typer()
register_commands(app)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("TOKENBUS_DATABASE_URL", url)
    monkeypatch.setenv("TOKENBUS_KEY_PEPPER", "cli-pepper")
    return url


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _tenant_of(url: str, key: str) -> str | None:
    async def lookup() -> str | None:
        settings = TenantStoreSettings(database_url=url, key_pepper="cli-pepper")  # type: ignore[call-arg]
        async with open_store(settings) as store:
            principal = await store.principal(key)
        return principal.tenant if principal else None

    return asyncio.run(lookup())


def test_create_list_revoke(db: str) -> None:
    created = json.loads(run("keys", "create", "--tenant", "acme", "--json"))
    assert created["key"].startswith("tb-") and created["tenant"] == "acme"
    assert _tenant_of(db, created["key"]) == "acme"
    listed = run("keys", "list")
    assert created["id"] in listed and created["key"] not in listed  # never shown again
    assert created["key"][-4:] in listed
    assert "revoked" in run("keys", "revoke", created["id"])
    assert _tenant_of(db, created["key"]) is None
    again = CliRunner().invoke(app, ["keys", "revoke", created["id"]])
    assert again.exit_code == 1


def test_the_text_output_shows_the_key_once(db: str) -> None:
    out = run("keys", "create", "--tenant", "acme", "--admin")
    key = out.strip().splitlines()[-1]
    assert key.startswith("tb-") and "(admin)" in out
    assert _tenant_of(db, key) == "acme"


def test_set_limits_changes_only_the_limits_given_and_zero_clears(db: str) -> None:
    run("tenants", "create", "acme")
    assert "rpm=20" in run("tenants", "set-limits", "acme", "--rpm", "20", "--tpm", "5000")
    out = run("tenants", "set-limits", "acme", "--concurrency", "2", "--daily-tokens", "100000")
    assert "rpm=20, tpm=5000, concurrency=2, daily_tokens=100000" in out
    assert "rpm=none" in run("tenants", "set-limits", "acme", "--rpm", "0")
    [row] = json.loads(run("tenants", "list", "--json"))
    assert row == {
        "name": "acme",
        "rpm": None,
        "tpm": 5000,
        "concurrency": 2,
        "daily_tokens": 100000,
        "active_keys": 0,
    }


def test_limits_of_an_unknown_tenant_are_an_error(db: str) -> None:
    result = CliRunner().invoke(app, ["tenants", "set-limits", "nobody", "--rpm", "1"])
    assert result.exit_code == 1 and "tokenbus tenants create nobody" in result.output


def test_the_placeholder_pepper_is_warned_about(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENBUS_KEY_PEPPER")
    result = CliRunner().invoke(app, ["keys", "list"])
    assert result.exit_code == 0 and "TOKENBUS_KEY_PEPPER is not set" in result.output


def test_the_dev_key_is_made_once(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = ensure_dev_key(db)
    assert key is not None and key in capsys.readouterr().out
    assert _tenant_of(db, key) == "dev"
    assert ensure_dev_key(db) is None
    out = capsys.readouterr().out
    assert "tokenbus keys create --tenant dev" in out and "tb-" not in out
