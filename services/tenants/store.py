"""TenantStore: tenants, their limits and API keys in the analytics database (async)."""

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.tenants.keys import key_hash, looks_like_key, new_key, new_key_id
from services.tenants.schema import api_keys, tenants


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits; None means no limit of that kind."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    daily_tokens: int | None = None

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    @classmethod
    def of_row(cls, row: Any) -> "Limits":
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid key speaks for."""

    tenant: str
    key_id: str
    admin: bool
    limits: Limits


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    tenant: str
    hint: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TenantRecord:
    name: str
    limits: Limits
    active_keys: int
    created_at: datetime


class UnknownTenant(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no tenant named {name!r}")
        self.name = name


def dialect_insert(engine: AsyncEngine) -> Callable[..., Any]:
    """`insert` with ON CONFLICT for this engine's dialect (SQLite or PostgreSQL)."""
    return sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert


class TenantStore:
    """Keys are stored only as HMAC-SHA256(pepper, key); a key is shown once, when made."""

    def __init__(self, engine: AsyncEngine, pepper: bytes) -> None:
        self.engine = engine
        self._pepper = pepper
        self._insert = dialect_insert(engine)

    def hash(self, key: str) -> str:
        return key_hash(key, self._pepper)

    async def principal(self, key: str) -> Principal | None:
        """The live key's tenant, flags and limits; None for an unknown or revoked key."""
        if not looks_like_key(key):
            return None
        return await self.principal_by_hash(self.hash(key))

    async def principal_by_hash(self, digest: str) -> Principal | None:
        query = (
            select(api_keys.c.id, api_keys.c.admin, tenants)
            .join(tenants, tenants.c.id == api_keys.c.tenant_id)
            .where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return Principal(row.name, row.id, row.admin, Limits.of_row(row))

    async def create_tenant(self, name: str) -> bool:
        """Create `name` if it is new; True if it was."""
        async with self.engine.begin() as conn:
            return await self._ensure_tenant(conn, name)

    async def _ensure_tenant(self, conn: AsyncConnection, name: str) -> bool:
        statement = (
            self._insert(tenants)
            .values(name=name, created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(tenants.c.id)
        )
        return (await conn.execute(statement)).first() is not None

    async def create_key(self, tenant: str, *, admin: bool = False) -> tuple[KeyRecord, str]:
        """A new key for `tenant` (created if new): its record and the key, shown only now."""
        key, record_id, now = new_key(), new_key_id(), datetime.now(UTC)
        async with self.engine.begin() as conn:
            await self._ensure_tenant(conn, tenant)
            tenant_id = (
                await conn.execute(select(tenants.c.id).where(tenants.c.name == tenant))
            ).scalar_one()
            await conn.execute(
                api_keys.insert().values(
                    id=record_id,
                    tenant_id=tenant_id,
                    key_hash=self.hash(key),
                    hint=key[-4:],
                    admin=admin,
                    created_at=now,
                )
            )
        return KeyRecord(record_id, tenant, key[-4:], admin, now, None), key

    async def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        query = (
            select(api_keys, tenants.c.name)
            .join(tenants, tenants.c.id == api_keys.c.tenant_id)
            .order_by(tenants.c.name, api_keys.c.created_at)
        )
        if tenant is not None:
            query = query.where(tenants.c.name == tenant)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [KeyRecord(r.id, r.name, r.hint, r.admin, r.created_at, r.revoked_at) for r in rows]

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a live key; False if there is no such live key."""
        statement = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def set_limits(self, tenant: str, **changes: int | None) -> Limits:
        """Change the named limits of an existing tenant (None: no limit); return them all."""
        unknown = set(changes) - {f.name for f in fields(Limits)}
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        async with self.engine.begin() as conn:
            if changes:
                await conn.execute(update(tenants).where(tenants.c.name == tenant).values(changes))
            row = (await conn.execute(select(tenants).where(tenants.c.name == tenant))).first()
        if row is None:
            raise UnknownTenant(tenant)
        return Limits.of_row(row)

    async def list_tenants(self) -> list[TenantRecord]:
        live = (
            select(api_keys.c.tenant_id, func.count().label("n"))
            .where(api_keys.c.revoked_at.is_(None))
            .group_by(api_keys.c.tenant_id)
            .subquery()
        )
        query = (
            select(tenants, func.coalesce(live.c.n, 0).label("active_keys"))
            .outerjoin(live, live.c.tenant_id == tenants.c.id)
            .order_by(tenants.c.name)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [TenantRecord(r.name, Limits.of_row(r), r.active_keys, r.created_at) for r in rows]
