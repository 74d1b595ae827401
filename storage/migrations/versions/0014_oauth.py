"""OAuth 2.0 inboxes: a workspace's OAuth apps, authorizations in progress, and an inbox's
login method with its (encrypted) tokens.

Revision ID: 0014_oauth
Revises: 0013_outgoing_copy_due
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014_oauth"
down_revision: str | None = "0013_outgoing_copy_due"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "email_inbox",
        sa.Column("auth_method", sa.Text(), nullable=False, server_default=sa.text("'PASSWORD'")),
    )
    op.add_column("email_inbox", sa.Column("oauth_provider", sa.Text(), nullable=True))
    op.add_column(
        "email_inbox",
        sa.Column("oauth_managed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("email_inbox", sa.Column("oauth_refresh_token", sa.LargeBinary(), nullable=True))
    op.add_column("email_inbox", sa.Column("oauth_access_token", sa.LargeBinary(), nullable=True))
    op.add_column(
        "email_inbox",
        sa.Column("oauth_access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "email_inbox",
        sa.Column("oauth_reauth_required_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "oauth_app",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("client_secret", sa.LargeBinary(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
    )
    op.create_index(
        "uq_oauth_app_workspace_provider",
        "oauth_app",
        ["workspace_id", "provider"],
        unique=True,
    )
    op.create_table(
        "oauth_state",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("state_hash", sa.LargeBinary(), nullable=False, unique=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("code_verifier", sa.LargeBinary(), nullable=False),
        sa.Column("inbox_id", sa.Uuid(), nullable=True),
        sa.Column("email_hint", sa.Text(), nullable=True),
        sa.Column("inbox_settings", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("api_key_prefix", sa.Text(), nullable=True),
        sa.Column("client_address", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inbox_id"], ["email_inbox.id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("oauth_state")
    op.drop_index("uq_oauth_app_workspace_provider", table_name="oauth_app")
    op.drop_table("oauth_app")
    for column in (
        "oauth_reauth_required_at",
        "oauth_access_token_expires_at",
        "oauth_access_token",
        "oauth_refresh_token",
        "oauth_managed",
        "oauth_provider",
        "auth_method",
    ):
        op.drop_column("email_inbox", column)
