"""Tenants, API keys and rate limits, in the analytics database; used by the gateway, the
analytics API and `tokenbus keys` / `tokenbus tenants`."""

from services.tenants.limiter import Decision, Quota, RateLimiter, Ticket
from services.tenants.settings import TenantStoreSettings
from services.tenants.store import Limits, Principal, TenantStore, UnknownTenant

__all__ = [
    "Decision",
    "Limits",
    "Principal",
    "Quota",
    "RateLimiter",
    "TenantStore",
    "TenantStoreSettings",
    "Ticket",
    "UnknownTenant",
]
