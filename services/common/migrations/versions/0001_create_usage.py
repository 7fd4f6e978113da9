"""Create the usage table: one row per request attempt (branch `usage`: a rebuild drops it).

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("usage",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("route_score", sa.Float()),
        sa.Column("route_features", sa.JSON(), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("backend", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float()),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("finish_reason", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(32)),
        sa.Column("tries", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "attempt", name="uq_usage_request_attempt"),
    )
    op.create_index("ix_usage_started_at", "usage", ["started_at"])
    op.create_index("ix_usage_tenant_started_at", "usage", ["tenant_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_tenant_started_at", table_name="usage")
    op.drop_index("ix_usage_started_at", table_name="usage")
    op.drop_table("usage")
