"""Alembic migrations of the shared database: branch `usage` (analytics) and `tenants`
(keys and limits); run by `services.common.database.migrate`."""
