"""A sending worker's side of the outbox: claim due messages, hold their lease, record what
the SMTP server said. Each step is one statement that also announces the change
(OUTGOING_CHANGED) and, when it moves a due time, wakes the workers. Queueing and reading
messages is ``storage.outbox``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.jobs import wake_workers_sql
from storage.outbox import OUTGOING_COLUMNS, OutgoingRow

_RETURNED = ", ".join(f"o.{c}" for c in OUTGOING_COLUMNS.split(", "))


@dataclass(frozen=True, slots=True)
class ClaimedOutgoing:
    """A message this worker now holds (SENDING, leased). ``recovering``: it was SENDING under
    a lease that expired (its worker died, perhaps after the server accepted it), so it is
    looked for in the Sent folder before it is sent again."""

    row: OutgoingRow
    recovering: bool
    # The inbox's version when it was claimed: a worker that read this version of the inbox
    # before need not read it again (None: the inbox is gone).
    inbox_version: int | None = None


# One statement: take due messages (SKIP LOCKED): QUEUED ones whose time has come, and
# SENDING ones whose worker's lease expired. Only the QUEUED -> SENDING step is announced.
CLAIM_SQL = f"""
    WITH due AS (
        SELECT id, state AS was FROM outgoing_message
         WHERE (state = 'QUEUED' AND next_attempt_at <= now())
            OR (state = 'SENDING' AND lease_expires_at < now())
         ORDER BY next_attempt_at
         LIMIT $3
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE outgoing_message AS o
           SET state = 'SENDING',
               attempts = o.attempts + 1,
               lease_owner = $2,
               lease_expires_at = now() + make_interval(secs => $1),
               version = o.version + 1,
               updated_at = now()
          FROM due WHERE o.id = due.id
        RETURNING {_RETURNED}, due.was,
                  (SELECT i.version FROM email_inbox AS i WHERE i.id = o.inbox_id)
                      AS inbox_version
    ), notified AS (
        {announce_sql(EventKind.OUTGOING_CHANGED, "(SELECT * FROM claimed WHERE was = 'QUEUED')")}
    )
    SELECT claimed.* FROM claimed, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def claim_outgoing(
    connection: Connection, *, worker_id: str, lease: timedelta, limit: int
) -> list[ClaimedOutgoing]:
    rows = await connection.fetch(
        CLAIM_SQL, lease.total_seconds(), worker_id, limit, record_class=OutgoingRow
    )
    return [ClaimedOutgoing(row, row["was"] == "SENDING", row["inbox_version"]) for row in rows]


# Seconds until the next message becomes claimable (a QUEUED one's time, or a SENDING one's
# lease expiry), by the database's clock; NULL when nothing is open.
NEXT_DUE_SQL = """
    SELECT extract(epoch FROM min(due) - clock_timestamp())::float8
      FROM (SELECT min(next_attempt_at) AS due FROM outgoing_message WHERE state = 'QUEUED'
            UNION ALL
            SELECT min(lease_expires_at) FROM outgoing_message WHERE state = 'SENDING'
            UNION ALL
            SELECT min(copy_due_at) FROM outgoing_message WHERE copy_due_at IS NOT NULL) AS open
"""


async def next_due(connection: Connection) -> float | None:
    due_in: float | None = await connection.fetchval(NEXT_DUE_SQL)
    return due_in


EXTEND_LEASE_SQL = """
    UPDATE outgoing_message SET lease_expires_at = now() + make_interval(secs => $3)
     WHERE id = $1 AND lease_owner = $2 AND state = 'SENDING'
    RETURNING id
"""


async def extend_lease(
    connection: Connection, outgoing_id: uuid.UUID, worker_id: str, lease: timedelta
) -> bool:
    held = await connection.fetchval(
        EXTEND_LEASE_SQL, outgoing_id, worker_id, lease.total_seconds()
    )
    return held is not None


@dataclass(frozen=True, slots=True)
class SendResult:
    """What an attempt came to. ``state``: SENT, FAILED, or QUEUED again at ``retry_at``."""

    state: str
    code: int | None = None
    reply: str | None = None
    hint: str | None = None
    refused: dict[str, str] | None = None
    retry_at: datetime | None = None
    sent_folder: str | None = None
    # A retry that was not an attempt (the Sent folder could not be read): not counted.
    uncounted: bool = False
    # The attempt ended after DATA began without the server's reply (or it could not be
    # settled yet): the write-ahead mark stays, so no later attempt sends it again.
    keep_data_mark: bool = False
    # SENT, with a Sent-folder copy to file: when another worker should file it if this one
    # has not by then (it died).
    copy_due_at: datetime | None = None


RECORD_SQL = f"""
    WITH finished AS (
        UPDATE outgoing_message AS o
           SET state = $3, last_code = $4, last_reply = $5, last_hint = $6,
               refused = coalesce($7::jsonb, o.refused),
               next_attempt_at = coalesce($8::timestamptz, o.next_attempt_at),
               attempts = CASE WHEN $9 THEN greatest(o.attempts - 1, 0) ELSE o.attempts END,
               sent_folder = coalesce($10, o.sent_folder),
               sent_at = CASE WHEN $3 = 'SENT' THEN now() ELSE o.sent_at END,
               data_started_at = CASE WHEN $11 THEN o.data_started_at END,
               copy_due_at = CASE WHEN $3 = 'SENT' THEN $12::timestamptz END,
               lease_owner = NULL, lease_expires_at = NULL,
               version = o.version + 1, updated_at = now()
         WHERE o.id = $1 AND o.lease_owner = $2 AND o.state = 'SENDING'
        RETURNING {_RETURNED}
    ), notified AS (
        {announce_sql(EventKind.OUTGOING_CHANGED, "finished")}
        -- A retry is a job coming due later: workers re-plan their sleep.
        UNION ALL {wake_workers_sql("finished WHERE $8::timestamptz IS NOT NULL")}
    )
    SELECT finished.* FROM finished, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def record_result(
    connection: Connection, outgoing_id: uuid.UUID, worker_id: str, result: SendResult
) -> OutgoingRow | None:
    """Store an attempt's result if ``worker_id`` still holds the message; None: it lost the
    lease, and nothing is written."""
    row: OutgoingRow | None = await connection.fetchrow(
        RECORD_SQL,
        outgoing_id,
        worker_id,
        result.state,
        result.code,
        result.reply,
        result.hint,
        result.refused,
        result.retry_at,
        result.uncounted,
        result.sent_folder,
        result.keep_data_mark,
        result.copy_due_at,
        record_class=OutgoingRow,
    )
    return row


MARK_DATA_SQL = """
    UPDATE outgoing_message SET data_started_at = now()
     WHERE id = $1 AND lease_owner = $2 AND state = 'SENDING'
    RETURNING id
"""


async def mark_data_started(connection: Connection, outgoing_id: uuid.UUID, worker_id: str) -> bool:
    """The write-ahead mark, committed before the worker begins SMTP DATA: from here on the
    server may accept the message, so a successor must not send it again. False: the worker
    no longer holds the message and must not send it."""
    marked = await connection.fetchval(MARK_DATA_SQL, outgoing_id, worker_id)
    return marked is not None


SENT_FOLDER_SQL = """
    UPDATE outgoing_message SET sent_folder = coalesce($2, sent_folder), copy_due_at = NULL
     WHERE id = $1 AND state = 'SENT'
"""


async def note_sent_folder(
    connection: Connection, outgoing_id: uuid.UUID, folder: str | None
) -> None:
    """Where the copy of a SENT message was filed, or (None) that none will be: no copy is
    due any more. Not a change of state: no event."""
    await connection.execute(SENT_FOLDER_SQL, outgoing_id, folder)


# SENT messages whose copy is overdue, each held for ``$1`` seconds by pushing its due time
# (so two workers never file one copy at once; a worker that dies leaves it to come due).
CLAIM_COPIES_SQL = f"""
    WITH due AS (
        SELECT id FROM outgoing_message
         WHERE copy_due_at <= now() AND state = 'SENT'
         ORDER BY copy_due_at
         LIMIT $2
         FOR UPDATE SKIP LOCKED
    )
    UPDATE outgoing_message AS o SET copy_due_at = now() + make_interval(secs => $1)
      FROM due WHERE o.id = due.id
    RETURNING {_RETURNED}
"""  # noqa: S608


async def claim_copies(connection: Connection, *, hold: timedelta, limit: int) -> list[OutgoingRow]:
    rows: list[OutgoingRow] = await connection.fetch(
        CLAIM_COPIES_SQL, hold.total_seconds(), limit, record_class=OutgoingRow
    )
    return rows


RELEASE_SQL = f"""
    WITH released AS (
        UPDATE outgoing_message AS o
           SET state = 'QUEUED', lease_owner = NULL, lease_expires_at = NULL,
               next_attempt_at = now(), attempts = greatest(o.attempts - 1, 0),
               version = o.version + 1, updated_at = now()
         WHERE o.id = $1 AND o.lease_owner = $2 AND o.state = 'SENDING'
        RETURNING {_RETURNED}
    ), notified AS (
        {announce_sql(EventKind.OUTGOING_CHANGED, "released")}
        UNION ALL {wake_workers_sql("released")}
    )
    SELECT count(*) FROM released, (SELECT count(*) FROM notified) AS sent
"""  # noqa: S608


async def release(connection: Connection, outgoing_id: uuid.UUID, worker_id: str) -> bool:
    """Give back a message this worker holds but has not begun to send (shutting down): QUEUED
    again at once, its attempt not counted."""
    released = await connection.fetchval(RELEASE_SQL, outgoing_id, worker_id)
    return bool(released)
