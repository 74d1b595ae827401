"""Message actions: changes made in inboxd that the IMAP server has yet to see.

Setting a message's flags, deleting it under DELETE_WHEN_DELETED, and storing it under
DELETE_ON_RECEIVE each queue an action in the statement that makes the change in Postgres
(``queue_sql``), so the change and the promise to carry it to the server commit together: a
crash at any point loses neither. The process watching the inbox applies them
(``inboxd.message_actions``): ``claim`` hands it the due actions, in the order they were
made, only while it holds the inbox's watch lease, and pushes each one's next attempt out by
a backoff first, so an action whose attempt failed, or whose process died mid-way, is tried
again later; ``finish`` deletes the ones done. Applying one twice is harmless: storing a flag
is idempotent, and deleting a UID that is gone deletes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.rows import Row


class MessageActionKind(StrEnum):
    FLAGS = "FLAGS"  # set \Seen and \Flagged as ``seen`` and ``flagged`` say (None: leave)
    DELETE = "DELETE"  # mark \Deleted and expunge


class ActionRow(Row):
    """A ``message_action`` row, read-only."""

    id: int
    message_id: uuid.UUID | None
    folder: str
    uidvalidity: int
    uid: int
    kind: str
    seen: bool | None
    flagged: bool | None
    attempts: int


def queue_sql(name: str, rows: str) -> str:
    """Two CTEs: ``name`` queues an action for each row of the SELECT ``rows`` (message id,
    inbox id, folder, uidvalidity, uid, kind, seen, flagged), and ``{name}_notified`` wakes
    the inbox's watcher with MESSAGE_ACTION. The statement must read ``{name}_notified`` (a
    SELECT in WITH runs only as far as it is read): ``notified_sql(name)`` does."""
    inboxes = f"""(SELECT DISTINCT ON (i.id) i.id, i.workspace_id, i.version, i.status,
        a.message_id FROM {name} a JOIN email_inbox i ON i.id = a.inbox_id)"""  # noqa: S608
    return f"""{name} AS (
        INSERT INTO message_action (message_id, inbox_id, folder, uidvalidity, uid, kind, seen,
                                    flagged, next_attempt_at, created_at)
        SELECT q.*, now(), now() FROM ({rows}) q
        RETURNING inbox_id, message_id
    ), {name}_notified AS (
        {announce_sql(EventKind.MESSAGE_ACTION, inboxes)}
    )"""  # noqa: S608


def notified_sql(name: str) -> str:
    """How many watchers the CTEs of ``queue_sql(name, ...)`` woke (an expression)."""
    return f"(SELECT count(*) FROM {name}_notified)"  # noqa: S608


# Due actions of the inbox $1, oldest first, if $2 holds its watch lease: one row with a NULL
# id when nothing is due, none when the lease is lost. Each claimed action's next attempt is
# pushed out by min($4, $3 * 2^attempts) seconds before it is tried.
CLAIM_SQL = """
    WITH held AS (
        SELECT w.inbox_id FROM inbox_watch w
         WHERE w.inbox_id = $1 AND w.owner = $2 AND w.expires_at > now()
    ), due AS (
        SELECT a.id FROM message_action a, held
         WHERE a.inbox_id = held.inbox_id AND a.next_attempt_at <= now()
         ORDER BY a.id LIMIT $5
    ), claimed AS (
        UPDATE message_action a
           SET attempts = a.attempts + 1,
               next_attempt_at = now() + make_interval(
                   secs => least($4::float8, $3::float8 * 2 ^ least(a.attempts, 20)))
          FROM due
         WHERE a.id = due.id
        RETURNING a.id, a.message_id, a.folder, a.uidvalidity, a.uid, a.kind, a.seen,
                  a.flagged, a.attempts
    )
    SELECT claimed.* FROM held LEFT JOIN claimed ON true ORDER BY claimed.id
"""

FINISH_SQL = """
    WITH done AS (
        DELETE FROM message_action WHERE inbox_id = $1 AND id = ANY($2::bigint[])
    ), failed AS (
        UPDATE message_action SET last_error = $4 WHERE inbox_id = $1 AND id = ANY($3::bigint[])
    )
    SELECT min(next_attempt_at) FROM message_action
     WHERE inbox_id = $1 AND id <> ALL($2::bigint[])
"""


async def claim(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    *,
    backoff_base: float,
    backoff_max: float,
    limit: int = 500,
) -> list[ActionRow] | None:
    """The inbox's due actions, oldest first; None when ``owner`` no longer watches it."""
    rows: list[ActionRow] = await connection.fetch(
        CLAIM_SQL, inbox_id, owner, backoff_base, backoff_max, limit, record_class=ActionRow
    )
    if not rows:
        return None
    return [row for row in rows if row["id"] is not None]


async def finish(
    connection: Connection,
    inbox_id: uuid.UUID,
    *,
    done: list[int],
    failed: list[int],
    error: str | None = None,
) -> datetime | None:
    """Delete the actions ``done``, note ``error`` on those ``failed``; when the next of the
    inbox's remaining actions is due (None: none remain)."""
    due: datetime | None = await connection.fetchval(FINISH_SQL, inbox_id, done, failed, error)
    return due
