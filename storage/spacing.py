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

from storage.db import Connection

# Locks the accounts (advisory, sorted) and books the earliest login that keeps the spacing,
# if it is at most $3 seconds away: one round trip (migration 0005 says why it is a function).
BOOK_SQL = """
    SELECT slot_at, wait_seconds, booked FROM book_login_slot($1::text[], $2, $3)
"""


def account_key(address: str, username: str) -> str:
    return f"{address.casefold()}|{username.casefold()}"


@dataclass(frozen=True, slots=True)
class Booking:
    at: datetime  # when the login may happen
    wait: float  # seconds from now until then
    booked: bool  # False: too far away; nothing was booked, the test should wait queued


async def book_login(
    connection: Connection, accounts: Iterable[str], spacing: timedelta, *, wait_at_most: timedelta
) -> Booking:
    """Book the next login to ``accounts`` that keeps ``spacing``, unless it is further than
    ``wait_at_most`` away. One autocommit statement on a plain asyncpg connection: its
    implicit transaction holds the accounts' locks until the booking is committed."""
    keys = sorted(set(accounts))
    row = await connection.fetchrow(
        BOOK_SQL, keys, spacing.total_seconds(), wait_at_most.total_seconds()
    )
    assert row is not None  # the function returns one row
    return Booking(at=row["slot_at"], wait=max(0.0, row["wait_seconds"]), booked=row["booked"])
