"""audit_event table; indexes for spacing logins to the same account

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("inbox_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("api_key_prefix", sa.Text(), nullable=True),
        sa.Column("client_address", sa.Text(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_event_workspace_at", "audit_event", ["workspace_id", "at", "id"])
    op.create_index("ix_audit_event_inbox_at", "audit_event", ["inbox_id", "at"])
    op.create_index("ix_email_inbox_smtp_account", "email_inbox", ["smtp_host", "smtp_username"])
    op.create_index("ix_email_inbox_imap_account", "email_inbox", ["imap_host", "imap_username"])


def downgrade() -> None:
    op.drop_index("ix_email_inbox_imap_account", table_name="email_inbox")
    op.drop_index("ix_email_inbox_smtp_account", table_name="email_inbox")
    op.drop_index("ix_audit_event_inbox_at", table_name="audit_event")
    op.drop_index("ix_audit_event_workspace_at", table_name="audit_event")
    op.drop_table("audit_event")
