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
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import events
from storage.db import driver_connection, older_than
from storage.errors import NotFoundError
from storage.models import (
    OPEN_TEST_STATES,
    ConnectionTest,
    EmailInbox,
    TestState,
)
from storage.rows import TestRow, columns

JOBS_CHANNEL = "inboxd_jobs"
# Tests a user asked for (rate limited per inbox), as opposed to ones inboxd queued itself.
USER_REQUESTED_REASONS = ("MANUAL", "ROUND_TRIP")


async def get_open_test(session: AsyncSession, inbox_id: uuid.UUID) -> ConnectionTest | None:
    result = await session.execute(
        select(ConnectionTest).where(
            col(ConnectionTest.inbox_id) == inbox_id,
            col(ConnectionTest.state).in_(OPEN_TEST_STATES),
        )
    )
    return result.scalar_one_or_none()


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
    connection: Any, *, smtp: tuple[str, str], imap: tuple[str, str], spacing: timedelta
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


async def manual_tests_since(
    session: AsyncSession, inbox_id: uuid.UUID, window: timedelta
) -> list[datetime]:
    """Creation times of user-requested tests of the inbox within ``window``, oldest first."""
    result = await session.execute(
        select(col(ConnectionTest.created_at))
        .where(
            col(ConnectionTest.inbox_id) == inbox_id,
            col(ConnectionTest.reason).in_(USER_REQUESTED_REASONS),
            col(ConnectionTest.created_at) > func.now() - window,
        )
        .order_by(col(ConnectionTest.created_at))
    )
    return list(result.scalars())


async def enqueue_test(
    session: AsyncSession,
    inbox: EmailInbox,
    *,
    reason: str,
    round_trip: bool = False,
    round_trip_to: str | None = None,
    spacing: timedelta = timedelta(0),
) -> ConnectionTest:
    """Queue a test of ``inbox``, or return the one already queued or running.

    Callers hold the inbox's row lock and have just looked (test_connection) or cancelled
    (a settings change) the open test, so none is expected; the insert's ON CONFLICT still
    returns one that appeared anyway.
    """
    not_before = await spaced_start(
        await driver_connection(session),
        smtp=(inbox.smtp_host, inbox.smtp_username),
        imap=(inbox.imap_host, inbox.imap_username),
        spacing=spacing,
    )
    test_id = uuid.uuid4()
    statement = (
        insert(ConnectionTest)
        .values(
            id=test_id,
            inbox_id=inbox.id,
            workspace_id=inbox.workspace_id,
            state=TestState.QUEUED.value,
            reason=reason,
            round_trip=round_trip,
            round_trip_to=round_trip_to,
            inbox_version=inbox.version,
            attempts=0,
            run_after=func.greatest(func.now(), not_before) if not_before else func.now(),
            created_at=func.now(),
            version=1,
        )
        .on_conflict_do_nothing(
            index_elements=["inbox_id"],
            index_where=text("state IN ('QUEUED', 'RUNNING')"),
        )
        .returning(col(ConnectionTest.id))
    )
    inserted = (await session.execute(statement)).scalar_one_or_none()
    if inserted is None:
        existing = await get_open_test(session, inbox.id)
        if existing is not None:
            return existing
        raise RuntimeError("open connection test vanished while enqueueing")  # pragma: no cover
    await session.execute(text(f"NOTIFY {JOBS_CHANNEL}"))
    test = await get_test(session, inbox.workspace_id, test_id)
    await publish_test(session, test)
    return test


async def publish_test(session: AsyncSession, test: ConnectionTest) -> None:
    await events.publish(
        session,
        events.Event(
            events.EventKind.TEST_CHANGED,
            test.workspace_id,
            test.inbox_id,
            test.version,
            test_id=test.id,
        ),
    )


async def cancel_open_tests(session: AsyncSession, inbox_id: uuid.UUID) -> None:
    """Supersede open tests: their results would describe settings that no longer exist."""
    cancelled = await session.execute(
        update(ConnectionTest)
        .where(
            col(ConnectionTest.inbox_id) == inbox_id,
            col(ConnectionTest.state).in_(OPEN_TEST_STATES),
        )
        .values(
            state=TestState.CANCELLED.value,
            error="Superseded by a change to the inbox's connection settings.",
            finished_at=func.now(),
            lease_expires_at=None,
            version=ConnectionTest.version + 1,
        )
        .returning(ConnectionTest)
    )
    for test in cancelled.scalars():
        await publish_test(session, test)


async def get_test(
    session: AsyncSession, workspace_id: uuid.UUID, test_id: uuid.UUID
) -> ConnectionTest:
    result = await session.execute(
        select(ConnectionTest).where(
            col(ConnectionTest.id) == test_id, col(ConnectionTest.workspace_id) == workspace_id
        )
    )
    test = result.scalar_one_or_none()
    if test is None:
        raise NotFoundError("connection test", test_id)
    return test


async def list_tests(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    *,
    first: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[ConnectionTest], bool]:
    """Newest first, after the (created_at, id) cursor ``before``."""
    clauses: list[Any] = [
        col(ConnectionTest.workspace_id) == workspace_id,
        col(ConnectionTest.inbox_id) == inbox_id,
    ]
    if before is not None:
        clauses.append(older_than(col(ConnectionTest.created_at), col(ConnectionTest.id), before))
    rows = list(
        (
            await session.execute(
                select(ConnectionTest)
                .where(*clauses)
                .order_by(col(ConnectionTest.created_at).desc(), col(ConnectionTest.id).desc())
                .limit(first + 1)
            )
        ).scalars()
    )
    return rows[:first], len(rows) > first


TEST_COLUMNS = columns(ConnectionTest)
# Assembled from column names only; values are positional parameters.
LATEST_TESTS_SQL = (
    f"SELECT {TEST_COLUMNS}, rank FROM ("  # noqa: S608
    f"SELECT {TEST_COLUMNS}, row_number() OVER "
    "(PARTITION BY inbox_id ORDER BY created_at DESC, id DESC) AS rank "
    "FROM connection_test WHERE workspace_id = $1 AND inbox_id = ANY($2::uuid[])"
    ") ranked WHERE rank <= $3 ORDER BY inbox_id, rank"
)
READ_TEST_SQL = f"SELECT {TEST_COLUMNS} FROM connection_test WHERE id = $1 AND workspace_id = $2"  # noqa: S608


async def read_test(connection: Any, workspace_id: uuid.UUID, test_id: uuid.UUID) -> TestRow | None:
    """One test of the workspace, for display (no ORM object, no transaction)."""
    row: TestRow | None = await connection.fetchrow(
        READ_TEST_SQL, test_id, workspace_id, record_class=TestRow
    )
    return row


async def latest_tests(
    connection: Any, workspace_id: uuid.UUID, inbox_ids: Sequence[uuid.UUID], first: int
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
