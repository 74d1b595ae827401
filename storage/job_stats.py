"""How the verification queue stands, in one read: for metrics (``inboxd.metrics_live``).

A test is *due* when a worker may take it now: queued with its ``run_after`` passed, or running
under a lease that expired (its worker died). It is *overdue* when it has been due longer than
a worker needs to notice it; the longest wait is the queue's lag.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Connection

JOB_STATS_SQL = """
    SELECT count(*) FILTER (WHERE state = 'QUEUED') AS queued,
           count(*) FILTER (WHERE state = 'RUNNING' AND lease_expires_at >= now()) AS running,
           count(*) FILTER (WHERE due_at <= now()) AS due,
           count(*) FILTER (WHERE due_at <= now() - make_interval(secs => $1)) AS overdue,
           coalesce(extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now())), 0)
               ::float8 AS oldest_due_seconds
      FROM (SELECT state, lease_expires_at,
                   CASE WHEN state = 'QUEUED' THEN run_after ELSE lease_expires_at END AS due_at
              FROM connection_test
             WHERE state IN ('QUEUED', 'RUNNING')) AS open_tests
"""


@dataclass(frozen=True, slots=True)
class JobStats:
    queued: int
    running: int
    due: int
    overdue: int
    oldest_due_seconds: float


async def job_stats(connection: Connection, *, overdue_after: float) -> JobStats:
    row = await connection.fetchrow(JOB_STATS_SQL, overdue_after)
    assert row is not None  # an aggregate always has its one row
    return JobStats(
        queued=row["queued"],
        running=row["running"],
        due=row["due"],
        overdue=row["overdue"],
        oldest_due_seconds=row["oldest_due_seconds"],
    )
