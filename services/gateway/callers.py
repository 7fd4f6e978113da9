"""Who is calling: an API key's tenant and limits (keys mode), or tenant `dev` (open mode).

Lookups are cached for `key_cache_s` (a revoked key or changed limit takes effect within that
on every node), negative answers too, and concurrent lookups of one key share one query. While
the database cannot be reached, a key looked up within `stale_s` keeps its last answer
(docs/reliability.md): a blip must not log every client out.
"""

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError

from services.tenants.keys import looks_like_key
from services.tenants.store import Limits, TenantStore

log = structlog.get_logger("gateway")

DEV_TENANT = "dev"
_MAX_CACHED = 10_000
# With the database away, how soon a stale key is looked up again (not on every request).
_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class _Cached:
    fresh_until: float
    checked_at: float  # when the database last answered for this key
    caller: "Caller | None"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    limits: Limits = field(default_factory=Limits)
    admin: bool = False


OPEN_CALLER = Caller(DEV_TENANT)


class Authenticator:
    """`store` None: open mode, everyone is the dev tenant, with no limits."""

    def __init__(
        self, store: TenantStore | None, ttl_s: float = 5.0, stale_s: float = 3600.0
    ) -> None:
        self.store, self.ttl_s, self.stale_s = store, ttl_s, stale_s
        self._cache: dict[str, _Cached] = {}
        self._pending: dict[str, asyncio.Task[Caller | None]] = {}

    @property
    def open(self) -> bool:
        return self.store is None

    async def caller(self, key: str | None) -> Caller | None:
        """The caller a key stands for; None for a missing, unknown or revoked key. Raises
        the database's error when the store cannot be reached and the key was not looked up
        within `stale_s`."""
        if self.store is None:
            return OPEN_CALLER
        if not key or not looks_like_key(key):
            return None
        digest = self.store.hash(key)
        hit = self._cache.get(digest)
        if hit is not None and hit.fresh_until > time.monotonic():
            return hit.caller
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.create_task(self._lookup(digest))
            self._pending[digest] = task
            task.add_done_callback(lambda _: self._pending.pop(digest, None))
        return await asyncio.shield(task)

    async def _lookup(self, digest: str) -> Caller | None:
        assert self.store is not None
        try:
            principal = await self.store.principal_by_hash(digest)
        except (SQLAlchemyError, OSError) as exc:
            return self._stale(digest, exc)
        caller = (
            None
            if principal is None
            else Caller(principal.tenant, principal.limits, principal.admin)
        )
        if len(self._cache) >= _MAX_CACHED:  # a flood of random keys: start over, stay bounded
            self._cache.clear()
        now = time.monotonic()
        self._cache[digest] = _Cached(now + self.ttl_s, now, caller)
        return caller

    def _stale(self, digest: str, exc: Exception) -> Caller | None:
        """The last answer for a key the database cannot check now, if recent enough."""
        hit, now = self._cache.get(digest), time.monotonic()
        if hit is None or now - hit.checked_at > self.stale_s:
            raise exc
        log.warning("key_from_cache", error=type(exc).__name__, age_s=round(now - hit.checked_at))
        self._cache[digest] = _Cached(now + min(self.ttl_s, _RETRY_S), hit.checked_at, hit.caller)
        return hit.caller
