"""Add usage.api: which HTTP API asked, chat completions or Responses (branch `usage`).

Rows stored before it were all chat completions, so the server default fills them in.

Revision ID: 0004
Revises: 0001
Create Date: 2025-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage", sa.Column("api", sa.String(16), nullable=False, server_default="chat"))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 cannot drop a column, so Alembic copies the table there.
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("api")
