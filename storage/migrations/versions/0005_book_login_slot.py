"""book_login_slot(): lock the accounts and book their next login in one statement

The worker booked a login in four round trips (BEGIN, the advisory locks, the booking,
COMMIT): a plain statement's snapshot is taken before its locks are granted, so the booking
had to be a second statement to see what the previous holder committed. In a VOLATILE
plpgsql function each statement takes a fresh snapshot (READ COMMITTED), so the locks and
the booking run in one call, in the implicit transaction of one autocommit statement, and
the transaction-scoped locks are released when it ends.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION book_login_slot(
            accounts text[], spacing_seconds float8, wait_at_most_seconds float8,
            OUT slot_at timestamptz, OUT wait_seconds float8, OUT booked boolean
        ) LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            -- One lock per account, in sorted order (two bookings never wait on each other
            -- in a cycle).
            PERFORM count(pg_advisory_xact_lock(hashtext(account)))
               FROM (SELECT account FROM unnest(accounts) AS account ORDER BY account) AS sorted;
            -- A new statement, a new snapshot: it sees the previous holder's booking.
            SELECT greatest(clock_timestamp(),
                            max(last_login_at) + make_interval(secs => spacing_seconds))
              INTO slot_at
              FROM login_slot WHERE account = ANY(accounts);
            wait_seconds := extract(epoch FROM slot_at - clock_timestamp());
            booked := slot_at <= clock_timestamp() + make_interval(secs => wait_at_most_seconds);
            IF booked THEN
                INSERT INTO login_slot (account, last_login_at)
                SELECT account, slot_at FROM unnest(accounts) AS account
                ON CONFLICT (account) DO UPDATE
                   SET last_login_at = greatest(login_slot.last_login_at,
                                                excluded.last_login_at);
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION book_login_slot(text[], float8, float8)")
