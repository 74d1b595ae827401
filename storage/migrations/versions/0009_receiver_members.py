"""Receiving: the processes that receive mail, so inboxes are shared out evenly among them.

Revision ID: 0009_receiver_members
Revises: 0008_attachments
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009_receiver_members"
down_revision: str | None = "0008_attachments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receiver_member",
        sa.Column("owner", sa.Text(), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("receiver_member")
