"""Connection tests as durable jobs in Postgres.

A ``connection_test`` row is both what the user sees (state, per-side results) and the job a
worker runs. A partial unique index allows one open (QUEUED or RUNNING) test per inbox, so a
second request gets the first test back, and a worker holds a test through a lease that a dead
worker's successor can take over once it expires.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
    InboxStatus,
    TestState,
    utcnow,
)
from storage.rows import InboxRow, TestRow, columns

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


@dataclass(frozen=True, slots=True)
class ClaimedTest:
    """A test this worker now holds (RUNNING, leased), with its inbox as of the claim."""

    id: uuid.UUID
    attempts: int
    round_trip: bool
    round_trip_to: str | None
    inbox: InboxRow


def _notify_test_and_status(tests: str, inboxes: str) -> str:
    """A CTE body sending TEST_CHANGED for each row of ``tests`` (columns id, inbox_id,
    workspace_id, version) and STATUS_CHANGED for each row of ``inboxes`` (id, workspace_id,
    version, status), in that order."""
    test_changed = events.notify_sql(
        "'TEST_CHANGED'", "t.workspace_id", "t.inbox_id", "t.version", test_id="t.id"
    )
    status_changed = events.notify_sql(
        "'STATUS_CHANGED'", "i.workspace_id", "i.id", "i.version", status="i.status"
    )
    # Built from names in this module only: S608 does not apply.
    return (
        f"SELECT {test_changed} FROM {tests} t "  # noqa: S608
        f"UNION ALL SELECT {status_changed} FROM {inboxes} i"
    )


# One statement: take due tests (SKIP LOCKED), mark their inboxes VERIFYING, tell subscribers
# both, and return what the probes need. Autocommit: it is atomic on its own.
CLAIM_SQL = f"""
    WITH claimed AS (
        UPDATE connection_test AS t
           SET state = 'RUNNING',
               attempts = t.attempts + 1,
               lease_expires_at = now() + make_interval(secs => $1),
               worker_id = $2,
               started_at = coalesce(t.started_at, now()),
               version = t.version + 1
         WHERE t.id IN (
               SELECT id FROM connection_test
                WHERE (state = 'QUEUED' AND run_after <= now())
                   OR (state = 'RUNNING' AND lease_expires_at < now() AND attempts < $4)
                ORDER BY run_after
                LIMIT $3
                FOR UPDATE SKIP LOCKED)
        RETURNING t.id, t.inbox_id, t.workspace_id, t.version, t.attempts, t.round_trip,
                  t.round_trip_to
    ), verifying AS (
        UPDATE email_inbox AS i
           SET status = 'VERIFYING', status_reason = NULL, version = i.version + 1,
               updated_at = now()
          FROM claimed c
         WHERE i.id = c.inbox_id
        RETURNING {", ".join(f"i.{c}" for c in columns(EmailInbox).split(", "))}
    ), notified AS (
        {_notify_test_and_status("claimed", "verifying")}
    )
    SELECT c.id AS claimed_test_id, c.attempts AS claimed_attempts,
           c.round_trip AS claimed_round_trip, c.round_trip_to AS claimed_round_trip_to, v.*
      FROM claimed c JOIN verifying v ON v.id = c.inbox_id,
           (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def claim_tests(
    connection: Any, *, worker_id: str, lease: timedelta, limit: int, max_attempts: int
) -> list[ClaimedTest]:
    """Take up to ``limit`` runnable tests: queued and due, or running with an expired lease
    and attempts left (see ``fail_exhausted_then_next_due`` for those with none)."""
    rows = await connection.fetch(
        CLAIM_SQL, lease.total_seconds(), worker_id, limit, max_attempts, record_class=InboxRow
    )
    return [
        ClaimedTest(
            id=row["claimed_test_id"],
            attempts=row["claimed_attempts"],
            round_trip=row["claimed_round_trip"],
            round_trip_to=row["claimed_round_trip_to"],
            inbox=row,
        )
        for row in rows
    ]


# A test whose worker vanished during its last allowed attempt is not run again: it fails.
EXHAUSTED_REASON = (
    "The verification stopped unexpectedly on each of its {max_attempts} attempts; "
    "run testConnection to try again."
)
# Fail those, then: seconds until the next test becomes runnable (a queued test's run_after,
# or a running test's lease expiry), by the database's clock; NULL when nothing is open.
IDLE_SQL = f"""
    WITH failed AS (
        UPDATE connection_test
           SET state = 'FAILED', error = $2, lease_expires_at = NULL, worker_id = NULL,
               finished_at = now(), version = version + 1
         WHERE state = 'RUNNING' AND lease_expires_at < now() AND attempts >= $1
        RETURNING id, inbox_id, workspace_id, version
    ), inbox AS (
        UPDATE email_inbox AS i
           SET status = 'FAILED', status_reason = $2, last_check_at = now(),
               error_count = i.error_count + 1, version = i.version + 1, updated_at = now()
          FROM failed f
         WHERE i.id = f.inbox_id
        RETURNING i.id, i.workspace_id, i.version, i.status
    ), notified AS (
        {_notify_test_and_status("failed", "inbox")}
    )
    SELECT extract(epoch FROM min(due) - clock_timestamp())::float8 AS due_in,
           (SELECT count(*) FROM notified) AS sent
      FROM (SELECT min(run_after) AS due FROM connection_test WHERE state = 'QUEUED'
            UNION ALL
            SELECT min(lease_expires_at) FROM connection_test
             WHERE state = 'RUNNING' AND attempts < $1) AS open_tests
"""  # noqa: S608


async def fail_exhausted_then_next_due(connection: Any, *, max_attempts: int) -> float | None:
    """For a worker that found nothing to claim: fail the tests whose worker died on their
    last allowed attempt, and say how long until the next test is due (negative: it is due
    already, None: nothing is open)."""
    row = await connection.fetchrow(
        IDLE_SQL, max_attempts, EXHAUSTED_REASON.format(max_attempts=max_attempts)
    )
    due_in: float | None = row["due_in"]
    return due_in


async def extend_lease(
    session: AsyncSession, test_id: uuid.UUID, worker_id: str, lease: timedelta
) -> bool:
    result = await session.execute(
        update(ConnectionTest)
        .where(
            col(ConnectionTest.id) == test_id,
            col(ConnectionTest.worker_id) == worker_id,
            col(ConnectionTest.state) == TestState.RUNNING.value,
        )
        .values(lease_expires_at=utcnow() + lease)
        .returning(col(ConnectionTest.id))
    )
    return result.scalar_one_or_none() is not None


async def _set_inbox_status(
    session: AsyncSession, inbox_id: uuid.UUID, values: dict[str, Any]
) -> EmailInbox | None:
    result = await session.execute(
        update(EmailInbox)
        .where(col(EmailInbox.id) == inbox_id)
        .values(**values, version=EmailInbox.version + 1, updated_at=func.now())
        .returning(EmailInbox)
    )
    inbox = result.scalar_one_or_none()
    if inbox is not None:
        await events.publish(
            session,
            events.Event(
                events.EventKind.STATUS_CHANGED,
                inbox.workspace_id,
                inbox.id,
                inbox.version,
                status=inbox.status,
            ),
        )
    return inbox


@dataclass(frozen=True, slots=True)
class TestOutcome:
    passed: bool
    smtp: dict[str, Any] | None
    imap: dict[str, Any] | None
    dns: dict[str, Any] | None = None
    round_trip: dict[str, Any] | None = None
    reason: str | None = None
    # Set for a transient failure worth another attempt: when to try again.
    retry_at: datetime | None = None
    # The inbox's status; None: the same as ``passed``.
    inbox_active: bool | None = None
    # Which attempt this was, of how many at most: a retry's status says "retrying (2 of 5)".
    attempt: int = 1
    max_attempts: int = 1


RECORD_SQL = f"""
    WITH finished AS (
        UPDATE connection_test
           SET state = $3, smtp_result = $4::jsonb, imap_result = $5::jsonb,
               dns_result = $6::jsonb, round_trip_result = $7::jsonb, error = $8,
               run_after = coalesce($9::timestamptz, run_after),
               lease_expires_at = NULL, worker_id = NULL,
               finished_at = CASE WHEN $9::timestamptz IS NULL THEN now() END,
               version = version + 1
         WHERE id = $1 AND worker_id = $2 AND state = 'RUNNING'
        RETURNING {columns(ConnectionTest)}
    ), inbox AS (
        UPDATE email_inbox AS i
           SET status = $10, status_reason = $11, last_check_at = now(),
               error_count = CASE $12 WHEN 'reset' THEN 0 WHEN 'increment'
                                 THEN i.error_count + 1 ELSE i.error_count END,
               last_verified_at = CASE WHEN $13 THEN now() ELSE i.last_verified_at END,
               setup_status = coalesce($14::jsonb, i.setup_status),
               version = i.version + 1, updated_at = now()
          FROM finished f
         WHERE i.id = f.inbox_id
        RETURNING i.id, i.workspace_id, i.version, i.status
    ), notified AS (
        {_notify_test_and_status("finished", "inbox")}
        -- A retry is a job coming due later: workers re-plan their sleep.
        UNION ALL SELECT pg_notify('{JOBS_CHANNEL}', '') FROM finished
                   WHERE $9::timestamptz IS NOT NULL
    )
    SELECT finished.* FROM finished, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def record_outcome(
    connection: Any, test_id: uuid.UUID, worker_id: str, outcome: TestOutcome
) -> TestRow | None:
    """Store a finished attempt and the inbox's new status, in one statement, if ``worker_id``
    still holds the test. None: it lost the lease or the test was cancelled, and its result
    is discarded (nothing is written)."""
    retrying = outcome.retry_at is not None
    state = (
        TestState.QUEUED if retrying else TestState.PASSED if outcome.passed else TestState.FAILED
    )
    active = outcome.passed if outcome.inbox_active is None else outcome.inbox_active
    reason: str | None
    if retrying:
        assert outcome.retry_at is not None
        status = InboxStatus.PENDING
        reason = (
            f"{outcome.reason} Retrying ({outcome.attempt + 1} of {outcome.max_attempts}) "
            f"at {outcome.retry_at.isoformat(timespec='seconds')}."
        )
        error_count, setup_status = "keep", None
    else:
        status = InboxStatus.ACTIVE if active else InboxStatus.FAILED
        reason = outcome.reason
        error_count, setup_status = ("reset" if active else "increment"), outcome.dns
    row: TestRow | None = await connection.fetchrow(
        RECORD_SQL,
        test_id,
        worker_id,
        state.value,
        outcome.smtp,
        outcome.imap,
        outcome.dns,
        outcome.round_trip,
        outcome.reason,
        outcome.retry_at,
        status.value,
        reason,
        error_count,
        not retrying and active,
        setup_status,
        record_class=TestRow,
    )
    return row


INTERRUPTED_REASON = "Verification was interrupted by a server shutdown and is queued again."


async def release(session: AsyncSession, test_id: uuid.UUID, worker_id: str) -> bool:
    """Give back a test this worker holds but will not finish (shutting down): it is queued
    again at once, its attempt not counted, for any worker to take."""
    return await requeue(session, test_id, worker_id, run_after=None, reason=INTERRUPTED_REASON)


async def requeue(
    session: AsyncSession,
    test_id: uuid.UUID,
    worker_id: str,
    *,
    run_after: datetime | None,
    reason: str,
) -> bool:
    """Put a test this worker holds but did not run back in the queue, due at ``run_after``
    (None: now), its attempt not counted; the inbox is PENDING with ``reason``."""
    result = await session.execute(
        update(ConnectionTest)
        .where(
            col(ConnectionTest.id) == test_id,
            col(ConnectionTest.worker_id) == worker_id,
            col(ConnectionTest.state) == TestState.RUNNING.value,
        )
        .values(
            state=TestState.QUEUED.value,
            worker_id=None,
            lease_expires_at=None,
            run_after=run_after if run_after is not None else func.now(),
            attempts=func.greatest(ConnectionTest.attempts - 1, 0),
            version=ConnectionTest.version + 1,
        )
        .returning(ConnectionTest)
    )
    test = result.scalar_one_or_none()
    if test is None:
        return False
    await publish_test(session, test)
    await _set_inbox_status(
        session, test.inbox_id, {"status": InboxStatus.PENDING.value, "status_reason": reason}
    )
    await session.execute(text(f"NOTIFY {JOBS_CHANNEL}"))
    return True


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
