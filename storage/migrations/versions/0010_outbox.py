"""Sending: the outbox, its attachments' bytes, and the per-inbox daily send counts.

Revision ID: 0010_outbox
Revises: 0009_receiver_members
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_outbox"
down_revision: str | None = "0009_receiver_members"
branch_labels = None
depends_on = None


def upgrade() -> None:
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    op.create_table(
        "outgoing_message",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("to_addresses", jsonb, nullable=False),
        sa.Column("cc_addresses", jsonb, nullable=False),
        sa.Column("bcc_addresses", jsonb, nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("headers", jsonb, nullable=False),
        sa.Column("attachments", jsonb, nullable=False),
        sa.Column("reply_to_message_id", sa.Uuid(), nullable=True),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("reference_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("count_day", sa.Date(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_code", sa.Integer(), nullable=True),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("last_hint", sa.Text(), nullable=True),
        sa.Column("refused", jsonb, nullable=False),
        sa.Column("sent_folder", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
    )
    op.create_index(
        "uq_outgoing_message_idempotency",
        "outgoing_message",
        ["inbox_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_outgoing_message_inbox_created", "outgoing_message", ["inbox_id", "created_at", "id"]
    )
    op.create_index(
        "ix_outgoing_message_due",
        "outgoing_message",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'QUEUED'"),
    )
    op.create_index(
        "ix_outgoing_message_lease",
        "outgoing_message",
        ["lease_expires_at"],
        postgresql_where=sa.text("state = 'SENDING'"),
    )
    op.create_table(
        "outgoing_attachment",
        sa.Column("outgoing_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["outgoing_id"], ["outgoing_message.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("outgoing_id", "index"),
    )
    op.create_table(
        "send_count",
        sa.Column("inbox_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("inbox_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("send_count")
    op.drop_table("outgoing_attachment")
    op.drop_table("outgoing_message")
