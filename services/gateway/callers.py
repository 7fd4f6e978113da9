"""Who is calling: an API key's tenant and limits (keys mode), or tenant `dev` (open mode).

Lookups are cached for `key_cache_s` (a revoked key or changed limit takes effect within that
on every node), negative answers too, and concurrent lookups of one key share one query.
"""

import asyncio
import time
from dataclasses import dataclass, field

from services.tenants.keys import looks_like_key
from services.tenants.store import Limits, TenantStore

DEV_TENANT = "dev"
_MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    limits: Limits = field(default_factory=Limits)
    admin: bool = False


OPEN_CALLER = Caller(DEV_TENANT)


class Authenticator:
    """`store` None: open mode, everyone is the dev tenant, with no limits."""

    def __init__(self, store: TenantStore | None, ttl_s: float = 5.0) -> None:
        self.store, self.ttl_s = store, ttl_s
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._pending: dict[str, asyncio.Task[Caller | None]] = {}

    @property
    def open(self) -> bool:
        return self.store is None

    async def caller(self, key: str | None) -> Caller | None:
        """The caller a key stands for; None for a missing, unknown or revoked key. Raises
        the database's error when the store cannot be reached (and nothing is cached)."""
        if self.store is None:
            return OPEN_CALLER
        if not key or not looks_like_key(key):
            return None
        digest = self.store.hash(key)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.create_task(self._lookup(digest))
            self._pending[digest] = task
            task.add_done_callback(lambda _: self._pending.pop(digest, None))
        return await asyncio.shield(task)

    async def _lookup(self, digest: str) -> Caller | None:
        assert self.store is not None
        principal = await self.store.principal_by_hash(digest)
        caller = (
            None
            if principal is None
            else Caller(principal.tenant, principal.limits, principal.admin)
        )
        if len(self._cache) >= _MAX_CACHED:  # a flood of random keys: start over, stay bounded
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.ttl_s, caller)
        return caller
