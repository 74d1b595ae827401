"""When a SENT message's copy in the Sent folder is overdue (its sender died before filing
it): any sending worker files it then.

Revision ID: 0013_outgoing_copy_due
Revises: 0012_outgoing_data_started
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0013_outgoing_copy_due"
down_revision: str | None = "0012_outgoing_data_started"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outgoing_message", sa.Column("copy_due_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_outgoing_message_copy_due",
        "outgoing_message",
        ["copy_due_at"],
        postgresql_where=sa.text("copy_due_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outgoing_message_copy_due", table_name="outgoing_message")
    op.drop_column("outgoing_message", "copy_due_at")
