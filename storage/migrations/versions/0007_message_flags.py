"""Message flags, message actions waiting for the IMAP server, and deleted messages

Revision ID: 0007
Revises: 0006_receiving
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006_receiving"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "message",
        sa.Column("seen", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "message",
        sa.Column("flagged", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "message_action",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_message_action_inbox", "message_action", ["inbox_id", "id"])
    op.create_table(
        "deleted_message",
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id", "folder", "uidvalidity", "uid"),
    )
    op.create_index(
        "ix_deleted_message_message_id",
        "deleted_message",
        ["inbox_id", "message_id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("deleted_message")
    op.drop_table("message_action")
    op.drop_column("message", "flagged")
    op.drop_column("message", "seen")
