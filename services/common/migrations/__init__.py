"""Alembic migrations of the analytics tables (run by `services.analytics.migrate`)."""
