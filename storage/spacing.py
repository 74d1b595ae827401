"""Login spacing at the moment of login: one account is logged in to at most once per spacing.

Tests are already scheduled apart when they are queued (``jobs.spaced_start``, by host name
and username as written). Here the worker books the login itself, by the addresses the host
resolved to and the case-folded username: ``localhost`` and ``127.0.0.1``, or ``Alice`` and
``alice``, are one account. A login that would come too soon waits for its slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

# Advisory locks per account, taken in sorted order in their own statement (so the booking
# below sees what the previous holder committed).
LOCK_ACCOUNTS_SQL = """
    SELECT count(pg_advisory_xact_lock(hashtext(account)))
      FROM (SELECT account FROM unnest($1::text[]) AS account ORDER BY account) AS sorted
"""
# The earliest moment a login to all these accounts keeps the spacing, booked for them if it
# is at most $3 seconds away.
BOOK_SQL = """
    WITH slot AS (
        SELECT greatest(clock_timestamp(),
                        max(last_login_at) + make_interval(secs => $2)) AS at
          FROM login_slot WHERE account = ANY($1::text[])
    ), booked AS (
        INSERT INTO login_slot (account, last_login_at)
        SELECT account, slot.at FROM unnest($1::text[]) AS account, slot
         WHERE slot.at <= clock_timestamp() + make_interval(secs => $3)
        ON CONFLICT (account) DO UPDATE
           SET last_login_at = greatest(login_slot.last_login_at, excluded.last_login_at)
        RETURNING 1
    )
    SELECT slot.at, extract(epoch FROM slot.at - clock_timestamp())::float8 AS wait,
           (SELECT count(*) FROM booked) > 0 AS booked
      FROM slot
"""


def account_key(address: str, username: str) -> str:
    return f"{address.casefold()}|{username.casefold()}"


@dataclass(frozen=True, slots=True)
class Booking:
    at: datetime  # when the login may happen
    wait: float  # seconds from now until then
    booked: bool  # False: too far away; nothing was booked, the test should wait queued


async def book_login(
    connection: Any, accounts: Iterable[str], spacing: timedelta, *, wait_at_most: timedelta
) -> Booking:
    """Book the next login to ``accounts`` that keeps ``spacing``, unless it is further than
    ``wait_at_most`` away. Runs in its own transaction on a plain asyncpg connection."""
    keys = sorted(set(accounts))
    async with connection.transaction():
        await connection.fetchval(LOCK_ACCOUNTS_SQL, keys)
        row = await connection.fetchrow(
            BOOK_SQL, keys, spacing.total_seconds(), wait_at_most.total_seconds()
        )
    return Booking(at=row["at"], wait=max(0.0, row["wait"]), booked=row["booked"])
