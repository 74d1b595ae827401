"""Connection tests as durable jobs in Postgres.

A ``connection_test`` row is both what the user sees (state, per-side results) and the job a
worker runs. A partial unique index allows one open (QUEUED or RUNNING) test per inbox, so a
second request gets the first test back, and a worker holds a test through a lease that a dead
worker's successor can take over once it expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.models import ConnectionTest
from storage.rows import InboxRow, TestRow, columns

JOBS_CHANNEL = "inboxd_jobs"
# Tests a user asked for (rate limited per inbox), as opposed to ones inboxd queued itself.
USER_REQUESTED_REASONS = ["MANUAL", "ROUND_TRIP"]
TEST_COLUMNS = columns(ConnectionTest)


def wake_workers_sql(rows: str) -> str:
    """A SELECT waking the workers (a job is queued or rescheduled) if ``rows`` has any."""
    return f"SELECT pg_notify('{JOBS_CHANNEL}', '') FROM (SELECT 1 FROM {rows} LIMIT 1) AS r"  # noqa: S608


OPEN_TEST_SQL = (
    f"SELECT {TEST_COLUMNS} FROM connection_test "  # noqa: S608
    "WHERE inbox_id = $1 AND state IN ('QUEUED', 'RUNNING')"
)


async def get_open_test(connection: Connection, inbox_id: uuid.UUID) -> TestRow | None:
    row: TestRow | None = await connection.fetchrow(OPEN_TEST_SQL, inbox_id, record_class=TestRow)
    return row


LOCK_ACCOUNTS_SQL = (
    "SELECT pg_advisory_xact_lock(hashtext($1)), pg_advisory_xact_lock(hashtext($2))"
)


def latest_login_query(first: int) -> str:
    """SQL for the latest login scheduled within the spacing to either account; parameters
    from ``$first``: spacing seconds, SMTP host, SMTP username, IMAP host, IMAP username."""
    secs, smtp_host, smtp_user, imap_host, imap_user = (f"${first + i}" for i in range(5))
    return f"""
        SELECT max(t.run_after) FROM connection_test t
          JOIN email_inbox i ON i.id = t.inbox_id
         WHERE t.run_after > now() - make_interval(secs => {secs})
           AND ((i.smtp_host = {smtp_host} AND i.smtp_username = {smtp_user})
             OR (i.imap_host = {imap_host} AND i.imap_username = {imap_user}))
    """  # noqa: S608


LATEST_LOGIN_SQL = latest_login_query(1)


def account_lock_keys(smtp: tuple[str, str], imap: tuple[str, str]) -> tuple[str, str]:
    """The advisory lock keys of an inbox's two accounts, in the order they are taken."""
    accounts = sorted({f"{host}|{username}".lower() for host, username in (smtp, imap)})
    return accounts[0], accounts[-1]


async def spaced_start(
    connection: Connection, *, smtp: tuple[str, str], imap: tuple[str, str], spacing: timedelta
) -> datetime | None:
    """When a new login to these accounts ((host, username) for SMTP and IMAP) may happen at
    the earliest, or None for now. Runs on the asyncpg connection of the caller's transaction.

    Every inbox that logs in as the same username on the same host counts, in any workspace,
    so a thousand inboxes with guessed passwords cannot turn inboxd into a brute-forcer. The
    advisory locks (taken in a fixed order, in their own statement so that the next one
    sees what a transaction that held them committed) make concurrent enqueues for one
    account line up instead of colliding.
    """
    if spacing <= timedelta(0):
        return None
    await connection.execute(LOCK_ACCOUNTS_SQL, *account_lock_keys(smtp, imap))
    latest: datetime | None = await connection.fetchval(
        LATEST_LOGIN_SQL, spacing.total_seconds(), *smtp, *imap
    )
    return None if latest is None else latest + spacing


MANUAL_SINCE_SQL = """
    SELECT created_at FROM connection_test
     WHERE inbox_id = $1 AND reason = ANY($2::text[])
       AND created_at > now() - make_interval(secs => $3)
     ORDER BY created_at
"""


async def manual_tests_since(
    connection: Connection, inbox_id: uuid.UUID, window: timedelta
) -> list[datetime]:
    """Creation times of user-requested tests of the inbox within ``window``, oldest first."""
    rows = await connection.fetch(
        MANUAL_SINCE_SQL, inbox_id, USER_REQUESTED_REASONS, window.total_seconds()
    )
    return [row["created_at"] for row in rows]


# One statement: the test (unless one is open already: ON CONFLICT on the partial unique index),
# the workers woken, and TEST_CHANGED sent.
ENQUEUE_SQL = f"""
    WITH test AS (
        INSERT INTO connection_test (id, inbox_id, workspace_id, state, reason, round_trip,
                                     round_trip_to, inbox_version, attempts, run_after,
                                     created_at, version)
        VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $7, 0, greatest(now(), $8::timestamptz),
                now(), 1)
        ON CONFLICT (inbox_id) WHERE state IN ('QUEUED', 'RUNNING') DO NOTHING
        RETURNING {TEST_COLUMNS}
    ), notified AS (
        {wake_workers_sql("test")} UNION ALL {announce_sql(EventKind.TEST_CHANGED, "test")}
    )
    SELECT test.* FROM test, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def enqueue_test(
    connection: Connection,
    inbox: InboxRow,
    *,
    reason: str,
    round_trip: bool = False,
    round_trip_to: str | None = None,
    spacing: timedelta = timedelta(0),
) -> TestRow:
    """Queue a test of ``inbox``, or return the one already queued or running. Runs in the
    caller's transaction.

    Callers hold the inbox's row lock and have just looked (test_connection) or cancelled
    (a settings change) the open test, so none is expected; the insert's ON CONFLICT still
    returns one that appeared anyway.
    """
    not_before = await spaced_start(
        connection,
        smtp=(inbox.smtp_host, inbox.smtp_username),
        imap=(inbox.imap_host, inbox.imap_username),
        spacing=spacing,
    )
    test: TestRow | None = await connection.fetchrow(
        ENQUEUE_SQL,
        uuid.uuid4(),
        inbox.id,
        inbox.workspace_id,
        reason,
        round_trip,
        round_trip_to,
        inbox.version,
        not_before,
        record_class=TestRow,
    )
    if test is None:
        test = await get_open_test(connection, inbox.id)
        if test is None:  # pragma: no cover
            raise RuntimeError("open connection test vanished while enqueueing")
    return test


# Supersedes an inbox's open tests (their results would describe settings that no longer
# exist): a CTE for the statement that changes the settings, with its own TEST_CHANGED.
CANCEL_OPEN_TESTS_CTE = """
    cancelled AS (
        UPDATE connection_test
           SET state = 'CANCELLED',
               error = 'Superseded by a change to the inbox''s connection settings.',
               finished_at = now(), lease_expires_at = NULL, version = version + 1
         WHERE inbox_id = $1 AND state IN ('QUEUED', 'RUNNING')
        RETURNING id, inbox_id, workspace_id, version
    )
"""
CANCELLED_NOTIFY = announce_sql(EventKind.TEST_CHANGED, "cancelled")


LIST_TESTS_SQL = (
    f"SELECT {TEST_COLUMNS} FROM connection_test "  # noqa: S608
    "WHERE workspace_id = $1 AND inbox_id = $2 "
    "AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) "
    "ORDER BY created_at DESC, id DESC LIMIT $5"
)


async def list_tests(
    connection: Connection,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    *,
    first: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[TestRow], bool]:
    """Newest first, after the (created_at, id) cursor ``before``."""
    at, row_id = before if before is not None else (None, None)
    rows = await connection.fetch(
        LIST_TESTS_SQL, workspace_id, inbox_id, at, row_id, first + 1, record_class=TestRow
    )
    return rows[:first], len(rows) > first


# Assembled from column names only; values are positional parameters.
LATEST_TESTS_SQL = (
    f"SELECT {TEST_COLUMNS}, rank FROM ("  # noqa: S608
    f"SELECT {TEST_COLUMNS}, row_number() OVER "
    "(PARTITION BY inbox_id ORDER BY created_at DESC, id DESC) AS rank "
    "FROM connection_test WHERE workspace_id = $1 AND inbox_id = ANY($2::uuid[])"
    ") ranked WHERE rank <= $3 ORDER BY inbox_id, rank"
)
READ_TEST_SQL = f"SELECT {TEST_COLUMNS} FROM connection_test WHERE id = $1 AND workspace_id = $2"  # noqa: S608


async def read_test(
    connection: Connection, workspace_id: uuid.UUID, test_id: uuid.UUID
) -> TestRow | None:
    """One test of the workspace, or None."""
    row: TestRow | None = await connection.fetchrow(
        READ_TEST_SQL, test_id, workspace_id, record_class=TestRow
    )
    return row


async def latest_tests(
    connection: Connection, workspace_id: uuid.UUID, inbox_ids: Sequence[uuid.UUID], first: int
) -> dict[uuid.UUID, tuple[list[TestRow], bool]]:
    """The newest ``first`` tests of each inbox (and whether it has more), in one query."""
    rows = await connection.fetch(
        LATEST_TESTS_SQL, workspace_id, list(inbox_ids), first + 1, record_class=TestRow
    )
    found: dict[uuid.UUID, tuple[list[TestRow], bool]] = {i: ([], False) for i in inbox_ids}
    for test in rows:
        tests, _ = found[test.inbox_id]
        if test["rank"] <= first:
            tests.append(test)
        else:
            found[test.inbox_id] = (tests, True)
    return found
