"""The expiry of externally managed OAuth tokens, for the workers' "when does the next one run
out" (a partial index: only OAuth inboxes inboxd cannot refresh, not yet FAILED).

Revision ID: 0015_external_token_expiry
Revises: 0014_oauth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0015_external_token_expiry"
down_revision: str | None = "0014_oauth"
branch_labels = None
depends_on = None

WHERE = "auth_method = 'OAUTH2' AND NOT oauth_managed AND status <> 'FAILED'"


def upgrade() -> None:
    op.create_index(
        "ix_email_inbox_external_token_expiry",
        "email_inbox",
        ["oauth_access_token_expires_at"],
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_email_inbox_external_token_expiry", table_name="email_inbox")
