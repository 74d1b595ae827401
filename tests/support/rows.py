"""Rows as a test reads them behind the API's back: any workspace, by id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from storage.db import Database
from storage.inbox_reads import INBOX_COLUMNS
from storage.jobs import TEST_COLUMNS
from storage.rows import InboxRow, TestRow


async def stored_inbox(db: Database, inbox_id: uuid.UUID) -> InboxRow:
    async with db.connection() as connection:
        row: InboxRow | None = await connection.fetchrow(
            f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE id = $1",
            inbox_id,
            record_class=InboxRow,
        )
    assert row is not None, inbox_id
    return row


async def stored_test(db: Database, test_id: uuid.UUID) -> TestRow:
    async with db.connection() as connection:
        row: TestRow | None = await connection.fetchrow(
            f"SELECT {TEST_COLUMNS} FROM connection_test WHERE id = $1",
            test_id,
            record_class=TestRow,
        )
    assert row is not None, test_id
    return row


async def stored_tests(db: Database, inbox_ids: Sequence[uuid.UUID]) -> list[TestRow]:
    """Every test of these inboxes, in no particular order."""
    async with db.connection() as connection:
        return await connection.fetch(
            f"SELECT {TEST_COLUMNS} FROM connection_test WHERE inbox_id = ANY($1::uuid[])",
            list(inbox_ids),
            record_class=TestRow,
        )
