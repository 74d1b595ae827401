"""connection_test.round_trip_to: where a round-trip test message is sent

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("connection_test", sa.Column("round_trip_to", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("connection_test", "round_trip_to")
