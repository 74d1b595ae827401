"""Login slots (storage/spacing.py): concurrent bookings of one account never share a slot."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import timedelta

from storage import spacing
from storage.db import Database

SPACING = timedelta(seconds=30)


async def book(db: Database, accounts: list[str], wait_at_most: timedelta) -> spacing.Booking:
    async with db.connection() as connection:
        return await spacing.book_login(connection, accounts, SPACING, wait_at_most=wait_at_most)


async def test_concurrent_bookings_of_one_account_are_spaced(db: Database):
    # Eight workers book the same account at once, each on its own connection: the lock and
    # the booking must be one critical section that sees the previous holder's commit, or two
    # of them read the same last login and book the same slot.
    account = spacing.account_key("127.0.0.1", f"user-{uuid.uuid4().hex}")
    bookings = await asyncio.gather(
        *(book(db, [account], wait_at_most=timedelta(hours=1)) for _ in range(8))
    )
    assert all(booking.booked for booking in bookings)
    slots = sorted(booking.at for booking in bookings)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert min(gaps) >= SPACING, gaps
    # Each waits its own turn: the n-th booking waits about n spacings.
    assert sorted(booking.wait for booking in bookings)[-1] > 6 * SPACING.total_seconds()


async def test_a_slot_too_far_away_is_not_booked(db: Database):
    account = spacing.account_key("127.0.0.1", f"user-{uuid.uuid4().hex}")
    first = await book(db, [account], wait_at_most=timedelta(0))
    assert first.booked and first.wait == 0.0
    refused = await book(db, [account], wait_at_most=timedelta(seconds=5))
    assert not refused.booked
    assert refused.at == first.at + SPACING
    # Nothing was booked by the refusal: the next slot is still one spacing after the first.
    again = await book(db, [account], wait_at_most=timedelta(hours=1))
    assert again.booked and again.at == first.at + SPACING


async def test_one_booking_covers_every_spelling_it_names(db: Database):
    name = f"user-{uuid.uuid4().hex}"
    by_ip = spacing.account_key("127.0.0.1", name)
    by_v6 = spacing.account_key("::1", name.upper())
    first = await book(db, [by_ip, by_v6], wait_at_most=timedelta(0))
    assert first.booked
    # Either spelling alone now waits for the slot after the joint booking.
    later = await book(db, [by_v6], wait_at_most=timedelta(hours=1))
    assert later.at == first.at + SPACING
