"""The moment a sending attempt was about to begin SMTP DATA (the write-ahead mark).

Set just before DATA, kept until an attempt ends with a reply: a successor that finds it set
knows the server may have the message and does not send it again.

Revision ID: 0012_outgoing_data_started
Revises: 0011_inbox_sending
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012_outgoing_data_started"
down_revision: str | None = "0011_inbox_sending"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "outgoing_message",
        sa.Column("data_started_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("outgoing_message", "data_started_at")
