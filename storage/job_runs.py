"""A worker's side of a connection test: claim it, hold its lease, record its outcome.

Each step that changes a test and its inbox is one statement that also sends their
notifications, the inbox's through ``storage.inbox_changes``, so nothing is recorded or
announced half-way. Queueing and reading tests is ``storage.jobs``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage import inbox_changes
from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.jobs import TEST_COLUMNS, wake_workers_sql
from storage.models import EmailInbox, InboxStatus, TestState
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


def _tests_then(tests: str, inbox: inbox_changes.InboxChange) -> str:
    """The notifications of a statement that changes tests (``tests``: columns id, inbox_id,
    workspace_id, version) and their inboxes: TEST_CHANGED for each test, then the inboxes'."""
    return f"{announce_sql(EventKind.TEST_CHANGED, tests)} UNION ALL {inbox.notify}"


VERIFYING = inbox_changes.change(
    "verifying",
    "status = 'VERIFYING', status_reason = NULL",
    source="claimed c",
    where="i.id = c.inbox_id",
    returning=", ".join(f"i.{c}" for c in columns(EmailInbox).split(", ")),
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
    ), {VERIFYING.cte}, notified AS (
        {_tests_then("claimed", VERIFYING)}
    )
    SELECT c.id AS claimed_test_id, c.attempts AS claimed_attempts,
           c.round_trip AS claimed_round_trip, c.round_trip_to AS claimed_round_trip_to,
           c.lag AS claimed_lag, v.*
      FROM claimed c JOIN verifying v ON v.id = c.inbox_id,
           (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def claim_tests(
    connection: Connection, *, worker_id: str, lease: timedelta, limit: int, max_attempts: int
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
EXHAUSTED = inbox_changes.change(
    "inbox",
    "status = 'FAILED', status_reason = $2, last_check_at = now(), error_count = i.error_count + 1",
    source="failed f",
    where="i.id = f.inbox_id",
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
    ), {EXHAUSTED.cte}, notified AS (
        {_tests_then("failed", EXHAUSTED)}
    )
    SELECT extract(epoch FROM min(due) - clock_timestamp())::float8 AS due_in,
           (SELECT count(*) FROM notified) AS sent
      FROM (SELECT min(run_after) AS due FROM connection_test WHERE state = 'QUEUED'
            UNION ALL
            SELECT min(lease_expires_at) FROM connection_test
             WHERE state = 'RUNNING' AND attempts < $1) AS open_tests
"""  # noqa: S608


async def fail_exhausted_then_next_due(
    connection: Connection, *, max_attempts: int
) -> float | None:
    """For a worker that found nothing to claim: fail the tests whose worker died on their
    last allowed attempt, and say how long until the next test is due (negative: it is due
    already, None: nothing is open)."""
    due_in: float | None = await connection.fetchval(
        IDLE_SQL, max_attempts, EXHAUSTED_REASON.format(max_attempts=max_attempts)
    )
    return due_in


EXTEND_LEASE_SQL = """
    UPDATE connection_test SET lease_expires_at = now() + make_interval(secs => $3)
     WHERE id = $1 AND worker_id = $2 AND state = 'RUNNING'
    RETURNING id
"""


async def extend_lease(
    connection: Connection, test_id: uuid.UUID, worker_id: str, lease: timedelta
) -> bool:
    held = await connection.fetchval(EXTEND_LEASE_SQL, test_id, worker_id, lease.total_seconds())
    return held is not None


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


RECORDED = inbox_changes.change(
    "inbox",
    """status = $10, status_reason = $11, last_check_at = now(),
       error_count = CASE $12 WHEN 'reset' THEN 0 WHEN 'increment'
                         THEN i.error_count + 1 ELSE i.error_count END,
       last_verified_at = CASE WHEN $13 THEN now() ELSE i.last_verified_at END,
       setup_status = coalesce($14::jsonb, i.setup_status)""",
    source="finished f",
    where="i.id = f.inbox_id",
)
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
        RETURNING {TEST_COLUMNS}
    ), {RECORDED.cte}, notified AS (
        {_tests_then("finished", RECORDED)}
        -- A retry is a job coming due later: workers re-plan their sleep.
        UNION ALL {wake_workers_sql("finished WHERE $9::timestamptz IS NOT NULL")}
    )
    SELECT finished.* FROM finished, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def record_outcome(
    connection: Connection, test_id: uuid.UUID, worker_id: str, outcome: TestOutcome
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


REQUEUED = inbox_changes.change(
    "inbox",
    "status = 'PENDING', status_reason = $4",
    source="requeued r",
    where="i.id = r.inbox_id",
)
# Back in the queue, its attempt not counted; the inbox PENDING; workers woken.
REQUEUE_SQL = f"""
    WITH requeued AS (
        UPDATE connection_test AS t
           SET state = 'QUEUED', worker_id = NULL, lease_expires_at = NULL,
               run_after = coalesce($3::timestamptz, now()),
               attempts = greatest(t.attempts - 1, 0), version = t.version + 1
         WHERE t.id = $1 AND t.worker_id = $2 AND t.state = 'RUNNING'
        RETURNING t.id, t.inbox_id, t.workspace_id, t.version
    ), {REQUEUED.cte}, notified AS (
        {_tests_then("requeued", REQUEUED)} UNION ALL {wake_workers_sql("requeued")}
    )
    SELECT (SELECT count(*) FROM requeued) AS requeued, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def release(connection: Connection, test_id: uuid.UUID, worker_id: str) -> bool:
    """Give back a test this worker holds but will not finish (shutting down): it is queued
    again at once, its attempt not counted, for any worker to take."""
    return await requeue(connection, test_id, worker_id, run_after=None, reason=INTERRUPTED_REASON)


async def requeue(
    connection: Connection,
    test_id: uuid.UUID,
    worker_id: str,
    *,
    run_after: datetime | None,
    reason: str,
) -> bool:
    """Put a test this worker holds but did not run back in the queue, due at ``run_after``
    (None: now), its attempt not counted; the inbox is PENDING with ``reason``. One
    statement."""
    row = await connection.fetchrow(REQUEUE_SQL, test_id, worker_id, run_after, reason)
    return row is not None and row["requeued"] > 0
