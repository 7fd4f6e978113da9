"""`tokenbus dev`: a development tenant and key, made once and printed once."""

import asyncio

from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings

DEV_TENANT = "dev"
# For every process `tokenbus dev` starts: keys mode with the placeholder secrets accepted.
DEV_ENV = {"TOKENBUS_ENVIRONMENT": "development"}


async def ensure_dev_key_async(database_url: str | None = None) -> str | None:
    """Create tenant `dev` with an admin key if it has no live key; return the new key (the
    only time it exists in plain text), or None if a key was already there. The database is
    `database_url`, else the environment's (DATABASE_URL, TOKENBUS_DATABASE_URL)."""
    overrides = {"database_url": database_url} if database_url else {}
    settings = TenantStoreSettings(**overrides)  # type: ignore[arg-type]
    async with open_store(settings) as store:
        if any(k.revoked_at is None for k in await store.list_keys(DEV_TENANT)):
            return None
        _, key = await store.create_key(DEV_TENANT, admin=True)
        return key


def ensure_dev_key(database_url: str | None = None) -> str | None:
    """As `ensure_dev_key_async`, and print the key, or how to get a new one."""
    key = asyncio.run(ensure_dev_key_async(database_url))
    if key is None:
        print(
            "  API key: the dev tenant's key was printed when it was made; for a new one:\n"
            "           tokenbus keys create --tenant dev",
            flush=True,
        )
    else:
        print(
            f"  API key (tenant dev; shown once, only its hash is stored): {key}",
            flush=True,
        )
    return key
