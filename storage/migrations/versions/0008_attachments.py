"""Received mail: attachment bytes (message_attachment) and a thread id per message

Revision ID: 0008_attachments
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_attachments"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_attachment",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", "index"),
    )
    # Messages stored before threads existed each start their own.
    op.add_column("message", sa.Column("thread_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE message SET thread_id = id")
    op.alter_column("message", "thread_id", nullable=False)
    op.create_index(
        "ix_message_inbox_thread", "message", ["inbox_id", "thread_id", "received_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_message_inbox_thread", table_name="message")
    op.drop_column("message", "thread_id")
    op.drop_table("message_attachment")
