"""Create tenants, api_keys, rate_counters and stream_leases (branch `tenants`).

A branch of its own, so that `analytics --from-beginning` (which drops and rebuilds the usage
branch from Kafka) never touches keys and limits, which Kafka cannot give back.

Revision ID: 0002
Revises:
Create Date: 2025-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("tenants",)
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("rpm", sa.BigInteger()),
        sa.Column("tpm", sa.BigInteger()),
        sa.Column("concurrency", sa.BigInteger()),
        sa.Column("daily_tokens", sa.BigInteger()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id", _ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(8), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "rate_counters",
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "kind", "window_start"),
    )
    op.create_index("ix_rate_counters_expires_at_ms", "rate_counters", ["expires_at_ms"])
    op.create_table(
        "stream_leases",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_stream_leases_tenant_expires_at_ms", "stream_leases", ["tenant", "expires_at_ms"]
    )
    op.create_index("ix_stream_leases_node", "stream_leases", ["node"])


def downgrade() -> None:
    op.drop_table("stream_leases")
    op.drop_table("rate_counters")
    op.drop_table("api_keys")
    op.drop_table("tenants")
