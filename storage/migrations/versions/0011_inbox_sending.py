"""Per-inbox sending settings: a copy in the Sent folder (null: the provider's rule) and the
time zone whose days the daily send limit counts (null: UTC).

Revision ID: 0011_inbox_sending
Revises: 0010_outbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011_inbox_sending"
down_revision: str | None = "0010_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "email_inbox", sa.Column("sending_copy_to_sent_folder", sa.Boolean(), nullable=True)
    )
    op.add_column("email_inbox", sa.Column("time_zone", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("email_inbox", "time_zone")
    op.drop_column("email_inbox", "sending_copy_to_sent_folder")
