"""The cache of messages this process just stored (``storage.recent_messages``): bounded, served
only to the row's workspace, and shared safely by subscribers that wait for a pending store."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest

from storage.db import Database
from storage.messages import MESSAGE_COLUMNS, MessageRow
from storage.recent_messages import RecentlyStored
from tests.support.waiting import loop_turn

WORKSPACE = uuid.uuid4()


async def message_row(db: Database, *, size: int = 100, workspace_id: uuid.UUID = WORKSPACE) -> Any:
    """A real ``MessageRow`` as asyncpg builds it, of a message that is not stored."""
    fields = {
        "id": str(uuid.uuid4()),
        "workspace_id": str(workspace_id),
        "inbox_id": str(uuid.uuid4()),
        "folder": "INBOX",
        "uidvalidity": 1,
        "uid": 1,
        "reference_ids": [],
        "to_addresses": [],
        "cc_addresses": [],
        "reply_to_addresses": [],
        "attachments": [],
        "size": size,
        "received_at": "2026-01-01T00:00:00Z",
        "seen": False,
        "flagged": False,
        "thread_id": str(uuid.uuid4()),
    }
    async with db.connection() as connection:
        row: MessageRow | None = await connection.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM jsonb_populate_record(NULL::message, $1::jsonb)",
            fields,
            record_class=MessageRow,
        )
    assert row is not None
    return row


async def keep(recent: RecentlyStored, row: MessageRow) -> None:
    with recent.storing(row.id, row.workspace_id) as stored:
        stored.set_result(row)


async def test_the_oldest_go_first_past_the_entry_bound(db: Database) -> None:
    recent = RecentlyStored(max_entries=3)
    rows = [await message_row(db) for _ in range(5)]
    for row in rows:
        await keep(recent, row)
    assert len(recent) == 3
    assert await recent.received(rows[0].id, WORKSPACE) is None
    assert await recent.received(rows[1].id, WORKSPACE) is None
    for row in rows[2:]:
        assert await recent.received(row.id, WORKSPACE) is row


async def test_the_kept_messages_stay_within_the_byte_bound(db: Database) -> None:
    recent = RecentlyStored(max_entries=100, max_bytes=10_000)
    small = [await message_row(db, size=4_000) for _ in range(3)]
    for row in small:
        await keep(recent, row)
    assert recent.bytes <= 10_000
    assert len(recent) == 2
    assert await recent.received(small[0].id, WORKSPACE) is None
    # One larger than the whole budget is not kept, and does not push the others out.
    huge = await message_row(db, size=20_000)
    await keep(recent, huge)
    assert await recent.received(huge.id, WORKSPACE) is None
    assert len(recent) == 2
    assert recent.bytes == 8_000


async def test_a_row_is_served_only_to_a_subscriber_of_its_workspace(db: Database) -> None:
    recent = RecentlyStored()
    row = await message_row(db)
    await keep(recent, row)
    assert await recent.received(row.id, uuid.uuid4()) is None
    assert await recent.received(row.id, WORKSPACE) is row


async def test_a_row_whose_workspace_differs_from_its_entry_is_never_served(db: Database) -> None:
    recent = RecentlyStored()
    row = await message_row(db, workspace_id=uuid.uuid4())
    with recent.storing(row.id, WORKSPACE) as stored:
        stored.set_result(row)
    assert await recent.received(row.id, WORKSPACE) is None
    assert await recent.received(row.id, row.workspace_id) is None


async def test_subscribers_wait_for_a_pending_store_and_one_leaving_spares_the_rest(
    db: Database,
) -> None:
    recent = RecentlyStored()
    row = await message_row(db)
    with recent.storing(row.id, WORKSPACE) as stored:
        staying = asyncio.create_task(recent.received(row.id, WORKSPACE))
        leaving = asyncio.create_task(recent.received(row.id, WORKSPACE))
        await loop_turn()
        assert not staying.done()
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        stored.set_result(row)
    assert await staying is row


@pytest.mark.parametrize("failure", [None, RuntimeError])
async def test_a_store_that_stored_nothing_or_failed_leaves_nothing(
    db: Database, failure: type[Exception] | None
) -> None:
    recent = RecentlyStored()
    message_id = uuid.uuid4()
    waiting: asyncio.Task[Any] | None = None
    expected = pytest.raises(RuntimeError) if failure else contextlib.nullcontext()
    with expected, recent.storing(message_id, WORKSPACE):
        waiting = asyncio.create_task(recent.received(message_id, WORKSPACE))
        await loop_turn()
        if failure:
            raise failure("the statement failed")
    assert waiting is not None and await waiting is None
    assert len(recent) == 0 and recent.bytes == 0
