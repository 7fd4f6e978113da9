"""`tokenbus keys ...` and `tokenbus tenants ...`: manage API keys and per-tenant limits.

Register on the main CLI with `register_commands(app)`.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from services.tenants.settings import TenantStoreSettings
from services.tenants.store import KeyRecord, TenantStore, UnknownTenant

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
tenants_app = typer.Typer(no_args_is_help=True, help="Tenants and their rate limits.")

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL of the analytics database (default: DATABASE_URL or "
        "TOKENBUS_DATABASE_URL, else .run/analytics.db)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]
RpmOpt = Annotated[
    int | None, typer.Option(min=0, show_default=False, help="Requests per minute (0: no limit)")
]
TpmOpt = Annotated[
    int | None, typer.Option(min=0, show_default=False, help="Tokens per minute (0: no limit)")
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option(min=0, show_default=False, help="Streams at once (0: no limit)")
]
DailyOpt = Annotated[
    int | None, typer.Option(min=0, show_default=False, help="Tokens per UTC day (0: no limit)")
]
T = TypeVar("T")


def register_commands(app: typer.Typer) -> None:
    """Add `keys` and `tenants` to the `tokenbus` command."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")


def _run(database_url: str | None, work: Callable[[TenantStore], Awaitable[T]]) -> T:
    from services.tenants.database import open_store

    overrides = {"database_url": database_url} if database_url else {}
    settings = TenantStoreSettings(**overrides)  # type: ignore[arg-type]
    if settings.insecure_secrets() and settings.environment != "development":
        typer.echo(
            "warning: TOKENBUS_KEY_PEPPER is not set; keys hashed with the development "
            "placeholder work only on gateways that use it too (development).",
            err=True,
        )

    async def main() -> T:
        async with open_store(settings) as store:
            return await work(store)

    return asyncio.run(main())


def _key_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant": record.tenant,
        "hint": f"…{record.hint}",
        "admin": record.admin,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant (created if new)", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="May read every tenant's usage")] = False,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key. It is printed once; only its hash is stored."""
    record, key = _run(database_url, lambda store: store.create_key(tenant, admin=admin))
    if as_json:
        typer.echo(json.dumps({**_key_json(record), "key": key}))
        return
    typer.echo(f"created {record.id} for tenant {record.tenant}{' (admin)' if admin else ''}")
    typer.echo("the key (shown only now; only its hash is stored):")
    typer.echo(key)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
    database_url: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never the keys themselves: their ids and last 4 characters)."""
    records = _run(database_url, lambda store: store.list_keys(tenant))
    if as_json:
        typer.echo(json.dumps([_key_json(r) for r in records]))
        return
    for r in records:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        flags = " admin" if r.admin else ""
        typer.echo(f"{r.id}  {r.tenant:<20} …{r.hint}  {state}{flags}")
    if not records:
        typer.echo("no keys")


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `tokenbus keys list`")],
    database_url: DatabaseOpt = None,
) -> None:
    """Revoke a key; gateways refuse it within their key cache time (5 s by default)."""
    if not _run(database_url, lambda store: store.revoke_key(key_id)):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@tenants_app.command("create")
def create_tenant(
    name: Annotated[str, typer.Argument(help="Tenant name")],
    database_url: DatabaseOpt = None,
) -> None:
    """Create a tenant (keys create their tenant too)."""
    created = _run(database_url, lambda store: store.create_tenant(name))
    typer.echo(f"{'created' if created else 'exists:'} {name}")


@tenants_app.command("list")
def list_tenants(database_url: DatabaseOpt = None, as_json: JsonOpt = False) -> None:
    """Tenants, their limits and how many active keys they have."""
    records = _run(database_url, lambda store: store.list_tenants())
    if as_json:
        rows = [
            {"name": r.name, **_limits(r.limits), "active_keys": r.active_keys} for r in records
        ]
        typer.echo(json.dumps(rows))
        return
    for r in records:
        limits = ", ".join(f"{k}={v}" for k, v in _limits(r.limits).items() if v is not None)
        typer.echo(f"{r.name:<20} keys={r.active_keys}  {limits or 'no limits'}")


@tenants_app.command("set-limits")
def set_limits(
    name: Annotated[str, typer.Argument(help="Tenant name")],
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    concurrency: ConcurrencyOpt = None,
    daily_tokens: DailyOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Set requests/min, tokens/min, concurrent streams, tokens/day (0 = no limit).

    Only the limits given change. Gateways pick them up within their cache time (5 s).
    """
    given = {"rpm": rpm, "tpm": tpm, "concurrency": concurrency, "daily_tokens": daily_tokens}
    changes = {k: (v or None) for k, v in given.items() if v is not None}
    try:
        limits = _run(database_url, lambda store: store.set_limits(name, **changes))
    except UnknownTenant as exc:
        typer.echo(f"{exc}; create it with `tokenbus tenants create {name}`", err=True)
        raise typer.Exit(1) from None
    shown = ", ".join(f"{k}={v if v is not None else 'none'}" for k, v in _limits(limits).items())
    typer.echo(f"{name}: {shown}")


def _limits(limits: Any) -> dict[str, int | None]:
    return {
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "concurrency": limits.concurrency,
        "daily_tokens": limits.daily_tokens,
    }
