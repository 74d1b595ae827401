"""A worker's side of a connection test: claim it, hold its lease, record its outcome.

Each step that changes a test and its inbox is one statement that also sends their
notifications (see ``events.notify_sql``), so nothing is recorded or announced half-way.
Queueing and reading tests is ``storage.jobs``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import events
from storage.jobs import JOBS_CHANNEL, publish_test
from storage.models import ConnectionTest, EmailInbox, InboxStatus, TestState, utcnow
from storage.rows import InboxRow, TestRow, columns


@dataclass(frozen=True, slots=True)
class ClaimedTest:
    """A test this worker now holds (RUNNING, leased), with its inbox as of the claim."""

    id: uuid.UUID
    attempts: int
    round_trip: bool
    round_trip_to: str | None
    inbox: InboxRow
    # Seconds from when it came due (queued run_after, or its expired lease) to this claim.
    lag: float = 0.0


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
          FROM (SELECT id,
                       CASE WHEN state = 'QUEUED' THEN run_after ELSE lease_expires_at END AS due_at
                  FROM connection_test
                 WHERE (state = 'QUEUED' AND run_after <= now())
                    OR (state = 'RUNNING' AND lease_expires_at < now() AND attempts < $4)
                 ORDER BY run_after
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED) AS due
         WHERE t.id = due.id
        RETURNING t.id, t.inbox_id, t.workspace_id, t.version, t.attempts, t.round_trip,
                  t.round_trip_to, extract(epoch FROM now() - due.due_at)::float8 AS lag
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
           c.round_trip AS claimed_round_trip, c.round_trip_to AS claimed_round_trip_to,
           c.lag AS claimed_lag, v.*
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
            lag=row["claimed_lag"],
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
