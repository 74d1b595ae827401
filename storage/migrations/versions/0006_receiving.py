"""Receiving mail: per-inbox settings, watch leases, folder sync state and messages

Revision ID: 0006_receiving
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_receiving"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.add_column(
        "email_inbox",
        sa.Column(
            "receiving_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
    )
    op.add_column(
        "email_inbox",
        sa.Column(
            "receiving_folders",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{INBOX}'"),
            nullable=False,
        ),
    )
    op.add_column(
        "email_inbox",
        sa.Column(
            "receiving_backfill_days", sa.Integer(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.create_table(
        "inbox_watch",
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("idle_supported", sa.Boolean(), nullable=True),
        sa.Column("last_error_code", sa.Text(), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("last_error_hint", sa.Text(), nullable=True),
        sa.Column("auth_failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id"),
    )
    op.create_table(
        "folder_sync",
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id", "folder"),
    )
    op.create_table(
        "message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("reference_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("from_address", JSONB, nullable=True),
        sa.Column("to_addresses", JSONB, nullable=False),
        sa.Column("cc_addresses", JSONB, nullable=False),
        sa.Column("reply_to_addresses", JSONB, nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("attachments", JSONB, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("parse_error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_message_mailbox_uid",
        "message",
        ["inbox_id", "folder", "uidvalidity", "uid"],
        unique=True,
    )
    op.create_index(
        "uq_message_inbox_message_id",
        "message",
        ["inbox_id", "message_id"],
        unique=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_index("ix_message_inbox_received", "message", ["inbox_id", "received_at", "id"])
    op.create_index(
        "ix_message_workspace_received", "message", ["workspace_id", "received_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("message")
    op.drop_table("folder_sync")
    op.drop_table("inbox_watch")
    op.drop_column("email_inbox", "receiving_backfill_days")
    op.drop_column("email_inbox", "receiving_folders")
    op.drop_column("email_inbox", "receiving_enabled")
