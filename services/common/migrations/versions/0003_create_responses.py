"""Create responses: the index of stored Responses API objects (branch `responses`).

A branch of its own: `analytics --from-beginning` rebuilds only the usage branch, and the
response index is not rebuilt from usage. The events of a response stay in Kafka; a row holds
its tenant, times and the request echo, which are not in the events.

Revision ID: 0003
Revises:
Create Date: 2025-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("responses",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("shell", sa.JSON(), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
    )
    op.create_index("ix_responses_tenant_created_at", "responses", ["tenant", "created_at"])
    op.create_index("ix_responses_expires_at", "responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_responses_expires_at", table_name="responses")
    op.drop_index("ix_responses_tenant_created_at", table_name="responses")
    op.drop_table("responses")
