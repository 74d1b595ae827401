"""The outbox: messages queued for sending, read, listed and cancelled.

A ``outgoing_message`` row is both what the user sees (state, the server's reply) and the job
a worker runs (``storage.outbox_runs``). Queueing is one statement (``enqueue``): the
per-minute rate, the inbox's daily count, the row and its attachments, OUTGOING_CHANGED, the
workers woken and the audit row; with an idempotency key, the key is looked up first
(``by_idempotency_key``) in the caller's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from storage import audit
from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.jobs import wake_workers_sql
from storage.models import OutgoingMessage, utcnow
from storage.rows import Row, columns

OUTGOING_COLUMNS = columns(OutgoingMessage)
IDEMPOTENCY_WINDOW = timedelta(hours=24)
RATE_WINDOW = timedelta(minutes=1)  # sendEmail's per-inbox rate is counted per minute


class OutgoingRow(Row):
    """An ``outgoing_message`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID
    state: str
    to_addresses: list[dict[str, Any]]
    cc_addresses: list[dict[str, Any]]
    bcc_addresses: list[dict[str, Any]]
    subject: str
    text_body: str | None
    html_body: str | None
    headers: dict[str, str]
    attachments: list[dict[str, Any]]
    reply_to_message_id: uuid.UUID | None
    in_reply_to: str | None
    reference_ids: list[str]
    message_id: str
    idempotency_key: str | None
    send_at: datetime | None
    count_day: date
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_code: int | None
    last_reply: str | None
    last_hint: str | None
    refused: dict[str, str]
    sent_folder: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    data_started_at: datetime | None
    copy_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(slots=True)
class NewOutgoing:
    """A message as ``sendEmail`` accepted it, ready to queue. Addresses are
    ``{"name": str | None, "address": str}``."""

    to: list[dict[str, Any]]
    cc: list[dict[str, Any]]
    bcc: list[dict[str, Any]]
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    attachments: list[NewAttachment] = field(default_factory=list)
    reply_to_message_id: uuid.UUID | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    send_at: datetime | None = None
    idempotency_key: str | None = None


BY_KEY_SQL = (
    f"SELECT {OUTGOING_COLUMNS} FROM outgoing_message "  # noqa: S608
    "WHERE inbox_id = $1 AND idempotency_key = $2 "
    "AND created_at > now() - make_interval(secs => $3)"
)
# A key older than the window is free again: the old message keeps its row, not its key.
RELEASE_KEY_SQL = """
    UPDATE outgoing_message SET idempotency_key = NULL
     WHERE inbox_id = $1 AND idempotency_key = $2
       AND created_at <= now() - make_interval(secs => $3)
"""


async def by_idempotency_key(
    connection: Connection, inbox_id: uuid.UUID, key: str
) -> OutgoingRow | None:
    """The inbox's message queued with ``key`` within the last 24 hours; releases the key of
    an older one, so that the insert may take it."""
    window = IDEMPOTENCY_WINDOW.total_seconds()
    row: OutgoingRow | None = await connection.fetchrow(
        BY_KEY_SQL, inbox_id, key, window, record_class=OutgoingRow
    )
    if row is None:
        await connection.execute(RELEASE_KEY_SQL, inbox_id, key, window)
    return row


# One statement queues a message (atomic without a transaction of the caller's): the inbox's
# sends of the last minute counted against its per-minute rate; if under it, the day's count
# raised under the daily limit (the row lock of ON CONFLICT DO UPDATE makes concurrent sends of
# the inbox, in any process, take the count one after the other); if counted, the row and its
# attachments, OUTGOING_CHANGED, the workers woken and the audit row. Without an idempotency
# key the insert cannot conflict; with one, a concurrent send that took the key first leaves
# the row out and the count in: the caller's transaction rolls back (``Enqueued.key_taken``).
ENQUEUE_SQL = f"""
    WITH recent AS (
        SELECT created_at FROM outgoing_message
         WHERE inbox_id = $3 AND created_at > now() - make_interval(secs => $20)
         ORDER BY created_at DESC LIMIT greatest($21::int, 0)
    ), rate AS (
        SELECT count(*) AS sends, min(created_at) AS oldest FROM recent
    ), counted AS (
        INSERT INTO send_count AS c (inbox_id, day, count)
        SELECT $3, $18, 1 FROM rate WHERE $21 <= 0 OR rate.sends < $21
        ON CONFLICT (inbox_id, day) DO UPDATE SET count = c.count + 1 WHERE c.count < $22
        RETURNING count
    ), queued AS (
        INSERT INTO outgoing_message (
            id, workspace_id, inbox_id, state, to_addresses, cc_addresses, bcc_addresses,
            subject, text_body, html_body, headers, attachments, reply_to_message_id,
            in_reply_to, reference_ids, message_id, idempotency_key, send_at, count_day,
            attempts, next_attempt_at, refused, created_at, updated_at, version)
        SELECT $1, $2, $3, 'QUEUED', $4::jsonb, $5::jsonb, $6::jsonb, $7, $8, $9, $10::jsonb,
               $11::jsonb, $12, $13, $14, $15, $16, $17, $18, 0,
               greatest(now(), coalesce($17, now())), '{{}}'::jsonb, now(), now(), 1
          FROM counted
        ON CONFLICT (inbox_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {OUTGOING_COLUMNS}
    ), stored AS (
        INSERT INTO outgoing_attachment (outgoing_id, index, content)
        SELECT q.id, a.ord - 1, a.content
          FROM queued q, unnest($19::bytea[]) WITH ORDINALITY AS a(content, ord)
        RETURNING 1
    ), audited AS (
        {audit.record_rows_sql("queued", first=23)}
    ), notified AS (
        {announce_sql(EventKind.OUTGOING_CHANGED, "queued")}
        UNION ALL {wake_workers_sql("queued")}
    )
    SELECT rate.sends AS recent_sends, rate.oldest AS oldest_recent,
           (SELECT count(*) FROM counted) > 0 AS counted, queued.*
      FROM rate LEFT JOIN queued ON true,
           (SELECT count(*) FROM notified) AS sent, (SELECT count(*) FROM stored) AS attached,
           (SELECT count(*) FROM audited) AS recorded
"""  # noqa: S608


class EnqueueRow(OutgoingRow):
    """What ENQUEUE_SQL returns: the rate and count it found, and the row if it queued one
    (every column of it None if not)."""

    recent_sends: int
    oldest_recent: datetime | None
    counted: bool


@dataclass(frozen=True, slots=True)
class Audit:
    """Who queued the message, for its audit row (never the bodies: ids, counts, times)."""

    action: str
    api_key_prefix: str | None
    client_address: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The outcome of ``enqueue``: ``row`` when queued; else refused by the per-minute rate
    (``rate_limited``, the oldest of the minute's sends in ``oldest_recent``), by the daily
    limit (``limit_reached``), or the idempotency key was taken concurrently (``key_taken``)."""

    row: OutgoingRow | None
    rate_limited: bool
    limit_reached: bool
    key_taken: bool
    oldest_recent: datetime | None


async def enqueue(
    connection: Connection,
    *,
    outgoing_id: uuid.UUID,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    message: NewOutgoing,
    message_id: str,
    count_day: date,
    per_minute: int,
    daily_limit: int,
    audit_row: Audit,
) -> Enqueued:
    """Queue the message in one statement (see ENQUEUE_SQL); ``per_minute`` <= 0: no rate."""
    found: EnqueueRow | None = await connection.fetchrow(
        ENQUEUE_SQL,
        outgoing_id,
        workspace_id,
        inbox_id,
        message.to,
        message.cc,
        message.bcc,
        message.subject,
        message.text,
        message.html,
        message.headers,
        [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.content)}
            for a in message.attachments
        ],
        message.reply_to_message_id,
        message.in_reply_to,
        message.references,
        message_id,
        message.idempotency_key,
        message.send_at,
        count_day,
        [a.content for a in message.attachments],
        RATE_WINDOW.total_seconds(),
        per_minute,
        daily_limit,
        uuid.uuid4(),
        audit_row.action,
        audit_row.api_key_prefix,
        audit_row.client_address,
        audit_row.details,
        utcnow(),
        record_class=EnqueueRow,
    )
    assert found is not None  # the statement selects from ``rate``: always one row
    queued = found["id"] is not None
    rate_limited = 0 < per_minute <= found.recent_sends
    return Enqueued(
        row=found if queued else None,
        rate_limited=rate_limited,
        limit_reached=not rate_limited and not found.counted,
        key_taken=found.counted and not queued,
        oldest_recent=found.oldest_recent,
    )


READ_SQL = f"SELECT {OUTGOING_COLUMNS} FROM outgoing_message WHERE id = $1 AND workspace_id = $2"  # noqa: S608


async def read_outgoing(
    connection: Connection, workspace_id: uuid.UUID, outgoing_id: uuid.UUID
) -> OutgoingRow | None:
    row: OutgoingRow | None = await connection.fetchrow(
        READ_SQL, outgoing_id, workspace_id, record_class=OutgoingRow
    )
    return row


LIST_SQL = (
    f"SELECT {OUTGOING_COLUMNS} FROM outgoing_message "  # noqa: S608
    "WHERE workspace_id = $1 AND inbox_id = $2 AND ($3::text IS NULL OR state = $3) "
    "AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5)) "
    "ORDER BY created_at DESC, id DESC LIMIT $6"
)


async def list_outgoing(
    connection: Connection,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    *,
    first: int,
    before: tuple[datetime, uuid.UUID] | None,
    state: str | None,
) -> tuple[list[OutgoingRow], bool]:
    """Newest first, after the (created_at, id) cursor ``before``."""
    at, row_id = before if before is not None else (None, None)
    rows = await connection.fetch(
        LIST_SQL, workspace_id, inbox_id, state, at, row_id, first + 1, record_class=OutgoingRow
    )
    return rows[:first], len(rows) > first


# Only a QUEUED message can be cancelled; its place in the day's count is given back.
CANCEL_SQL = f"""
    WITH cancelled AS (
        UPDATE outgoing_message
           SET state = 'CANCELLED', version = version + 1, updated_at = now()
         WHERE id = $1 AND workspace_id = $2 AND state = 'QUEUED'
        RETURNING {OUTGOING_COLUMNS}
    ), uncounted AS (
        UPDATE send_count s SET count = greatest(s.count - 1, 0)
          FROM cancelled c WHERE s.inbox_id = c.inbox_id AND s.day = c.count_day
        RETURNING 1
    ), notified AS (
        {announce_sql(EventKind.OUTGOING_CHANGED, "cancelled")}
    )
    SELECT cancelled.* FROM cancelled, (SELECT count(*) FROM notified) AS sent,
           (SELECT count(*) FROM uncounted) AS given_back
"""  # noqa: S608


async def cancel_outgoing(
    connection: Connection, workspace_id: uuid.UUID, outgoing_id: uuid.UUID
) -> OutgoingRow | None:
    """The message, CANCELLED; None if it is not QUEUED (or not the workspace's)."""
    row: OutgoingRow | None = await connection.fetchrow(
        CANCEL_SQL, outgoing_id, workspace_id, record_class=OutgoingRow
    )
    return row


ATTACHMENTS_SQL = "SELECT content FROM outgoing_attachment WHERE outgoing_id = $1 ORDER BY index"


async def read_attachment_contents(connection: Connection, outgoing_id: uuid.UUID) -> list[bytes]:
    rows = await connection.fetch(ATTACHMENTS_SQL, outgoing_id)
    return [bytes(row["content"]) for row in rows]
