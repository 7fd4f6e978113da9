"""Create conversations and conversation_items: server-side memory (branch `conversations`).

A branch of its own: `analytics --from-beginning` rebuilds only the usage branch, and
conversations are not rebuilt from usage. Item contents and the running summary are sealed
(AES-256-GCM) by the gateway before they reach a row; a copied database reveals no transcript.

Revision ID: 0005
Revises:
Create Date: 2025-12-15
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("conversations",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("summary", sa.LargeBinary()),
        sa.Column("summary_upto", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("summary_turns", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("busy_request", sa.String(80)),
        sa.Column("busy_until", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_conversations_tenant_updated_at", "conversations", ["tenant", "updated_at"])
    op.create_table(
        "conversation_items",
        sa.Column(
            "conversation_id",
            sa.String(64),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "id"),
        sa.UniqueConstraint(
            "conversation_id", "position", name="uq_conversation_items_conversation_id_position"
        ),
    )


def downgrade() -> None:
    op.drop_table("conversation_items")
    op.drop_index("ix_conversations_tenant_updated_at", table_name="conversations")
    op.drop_table("conversations")
