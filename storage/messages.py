"""Received messages and how far each folder has been read.

A message is stored, its folder's last seen UID advanced and MESSAGE_RECEIVED notified in one
statement (one transaction), and only while the caller still holds the inbox's watch lease:
a crash between two messages can neither skip one nor store one twice, and a process whose
lease was taken over stops writing. A message already stored (same folder, UIDVALIDITY and
UID, or the same Message-ID in the inbox) is not stored again, nor is one deleted in inboxd
(``deleted_message``); the folder still advances. Under DELETE_ON_RECEIVE the same statement
queues the message's deletion on the server (``storage.message_actions``), and with
notifyOnNewMessages the notice of a new message (``storage.notices``).

The same statement stores the message's attachment bytes (``message_attachment``, one row per
kept attachment, from one array parameter) and gives it its thread: the thread of the first
message of the inbox its In-Reply-To or References name (In-Reply-To first, then References
from the nearest), else a thread of its own (its own id). A parent that arrives after its
reply does not join them: they stay two threads.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from storage import inbox_changes, message_actions, notices
from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.jobs import wake_workers_sql
from storage.models import Message
from storage.rows import Row, columns


class MessageRow(Row):
    """A ``message`` row, read-only."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID
    folder: str
    uidvalidity: int
    uid: int
    message_id: str | None
    in_reply_to: str | None
    reference_ids: list[str]
    subject: str | None
    from_address: dict[str, Any] | None
    to_addresses: list[dict[str, Any]]
    cc_addresses: list[dict[str, Any]]
    reply_to_addresses: list[dict[str, Any]]
    sent_at: datetime | None
    text_body: str | None
    html_body: str | None
    attachments: list[dict[str, Any]]
    size: int
    parse_error: str | None
    received_at: datetime
    seen: bool
    flagged: bool
    thread_id: uuid.UUID


MESSAGE_COLUMNS = columns(Message)


@dataclass(slots=True)
class NewMessage:
    """What the receiver parsed from one fetched message (see mail.parse)."""

    folder: str
    uidvalidity: int
    uid: int
    size: int
    message_id: str | None = None
    in_reply_to: str | None = None
    reference_ids: list[str] = field(default_factory=list)
    subject: str | None = None
    from_address: dict[str, Any] | None = None
    to_addresses: list[dict[str, Any]] = field(default_factory=list)
    cc_addresses: list[dict[str, Any]] = field(default_factory=list)
    reply_to_addresses: list[dict[str, Any]] = field(default_factory=list)
    sent_at: datetime | None = None
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    attachment_contents: list[bytes | None] = field(default_factory=list)
    parse_error: str | None = None
    seen: bool = False  # the server's flags when the message was fetched
    flagged: bool = False


_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def parent_ids(message: NewMessage) -> list[str]:
    """The Message-IDs a message answers, nearest first: In-Reply-To, then References from
    the last (its parent) to the first (the thread's root)."""
    found = _MESSAGE_ID.findall(message.in_reply_to or "")
    found += reversed([r for r in message.reference_ids if _MESSAGE_ID.fullmatch(r)])
    return list(dict.fromkeys(found))


HELD = """
    SELECT i.id, i.workspace_id, i.version, i.status, i.delete_message_policy, i.email,
           i.active, i.sending_enabled, i.notify_on_new_messages, i.notification_email,
           i.time_zone, i.daily_send_limit
      FROM email_inbox i JOIN inbox_watch w ON w.inbox_id = i.id
     WHERE i.id = $1 AND w.owner = $2 AND w.expires_at > now()
"""

# The inbox's last message and check are counters, not a change of the inbox (no version).
TOUCHED = inbox_changes.counters(
    "touched",
    {"last_message_id": "stored.id::text", "last_check_at": "now()"},
    source="stored",
    where="i.id = stored.inbox_id",
    returning="i.id, i.workspace_id, i.version, i.status, stored.id AS message_id",
)

# Deleted in inboxd: never stored again, at this UID or (a copy elsewhere) by Message-ID.
DELETED_BEFORE = """
    SELECT 1 FROM deleted_message d
     WHERE d.inbox_id = held.id
       AND ((d.folder = $3 AND d.uidvalidity = $4 AND d.uid = $5) OR d.message_id = $7)
"""
# DELETE_ON_RECEIVE: the deletion on the server is queued with the message, so a crash after
# this commit still deletes it later, and nothing deletes it before the commit. A copy not
# stored (already there, or deleted in inboxd) is deleted just the same: it was received.
DELETE_ON_RECEIVE = message_actions.queue_sql(
    "queued",
    "SELECT (SELECT id FROM stored), held.id, $3, $4, $5, 'DELETE', NULL::boolean, "
    "NULL::boolean FROM held, advanced WHERE held.delete_message_policy = 'DELETE_ON_RECEIVE'",
)

# notifyOnNewMessages: the notice of a new message, queued with it (storage.notices).
NOTICE = notices.notice_sql(
    held="held",
    stored="stored",
    subject="$10::text",
    sender="$11::jsonb",
    sent_at="$15",
    day="$25::date",
    received_at="$26::text",
)

STORE_SQL = f"""
    WITH held AS ({HELD}), advanced AS (
        UPDATE folder_sync f SET last_uid = greatest(f.last_uid, $5), updated_at = now()
          FROM held
         WHERE f.inbox_id = held.id AND f.folder = $3 AND f.uidvalidity = $4
        RETURNING f.inbox_id
    ), stored AS (
        INSERT INTO message (id, workspace_id, inbox_id, folder, uidvalidity, uid, message_id,
                             in_reply_to, reference_ids, subject, from_address, to_addresses,
                             cc_addresses, reply_to_addresses, sent_at, text_body, html_body,
                             attachments, size, parse_error, received_at, seen, flagged,
                             thread_id)
        SELECT $6, held.workspace_id, held.id, $3, $4, $5, $7, $8, $9, $10, $11, $12, $13, $14,
               $15, $16, $17, $18, $19, $20, now(), $21, $22,
               coalesce((SELECT p.thread_id FROM message p
                          WHERE p.inbox_id = held.id AND p.message_id = ANY($24::text[])
                          ORDER BY array_position($24::text[], p.message_id) LIMIT 1), $6)
          FROM held, advanced
         WHERE NOT EXISTS ({DELETED_BEFORE})
        ON CONFLICT DO NOTHING
        RETURNING {MESSAGE_COLUMNS}
    ), attached AS (
        INSERT INTO message_attachment (message_id, index, content)
        SELECT stored.id, part.ordinality - 1, part.content
          FROM stored, unnest($23::bytea[]) WITH ORDINALITY AS part(content, ordinality)
         WHERE part.content IS NOT NULL
    ), {TOUCHED}, {DELETE_ON_RECEIVE}, {NOTICE}, notified AS (
        {announce_sql(EventKind.MESSAGE_RECEIVED, "touched")}
        UNION ALL {announce_sql(EventKind.OUTGOING_CHANGED, notices.NOTICED)}
        UNION ALL {wake_workers_sql(notices.NOTICED)}
    )
    SELECT (SELECT count(*) FROM advanced) AS advanced,
           (SELECT message_id FROM touched) AS stored,
           (SELECT count(*) FROM notified) AS notified,
           {message_actions.notified_sql("queued")} AS queued,
           {notices.OUTCOME_SQL} AS notice,
           stored.*
      FROM (VALUES (1)) AS outcome(one) LEFT JOIN stored ON true
"""  # noqa: S608


class StoredMessage(MessageRow):
    """STORE_SQL's answer: the stored message's columns (NULL when nothing was stored), as
    ``read_message`` would read them, and the statement's outcome."""

    advanced: int
    stored: uuid.UUID | None
    notified: int
    queued: int
    notice: str | None


log = structlog.get_logger("inboxd.receiver")


class LeaseLost(Exception):
    """The caller no longer holds the inbox's watch lease (another process took it over)."""


async def store_message(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    message: NewMessage,
    time_zone: str | None = None,
    *,
    message_id: uuid.UUID | None = None,
) -> MessageRow | None:
    """Store ``message`` as ``message_id`` (default: a new id) and advance its folder
    (``time_zone``: the inbox's, its notice's day); the stored row, or None when already
    stored. LeaseLost when ``owner`` lost the lease."""
    now = datetime.now(ZoneInfo(time_zone or "UTC"))
    record = await connection.fetchrow(
        STORE_SQL,
        inbox_id,
        owner,
        message.folder,
        message.uidvalidity,
        message.uid,
        message_id or uuid.uuid4(),
        message.message_id,
        message.in_reply_to,
        message.reference_ids,
        message.subject,
        message.from_address,
        message.to_addresses,
        message.cc_addresses,
        message.reply_to_addresses,
        message.sent_at,
        message.text_body,
        message.html_body,
        message.attachments,
        message.size,
        message.parse_error,
        message.seen,
        message.flagged,
        message.attachment_contents,
        parent_ids(message),
        now.date(),
        now.strftime("%Y-%m-%d %H:%M"),
        record_class=StoredMessage,
    )
    assert record is not None  # one row of aggregates, joined to the stored row if any
    if not record.advanced:
        raise LeaseLost(str(inbox_id))
    if record.notice == "DROPPED":
        log.warning(
            "new-message notice not sent: the inbox reached its daily send limit",
            inbox_id=str(inbox_id),
            message_id=str(record.stored),
        )
    return record if record.stored is not None else None


@dataclass(slots=True)
class MessageFilter:
    folder: str | None = None
    sender: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    unseen: bool | None = None  # True: only unseen messages; False or None: all
    thread_id: uuid.UUID | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filter_sql(
    workspace_id: uuid.UUID, inbox_id: uuid.UUID, flt: MessageFilter
) -> tuple[list[str], list[Any]]:
    args: list[Any] = [workspace_id, inbox_id]
    clauses = ["workspace_id = $1", "inbox_id = $2"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if flt.folder is not None:
        clauses.append(f"folder = {arg(flt.folder)}")
    if flt.unseen:
        clauses.append("NOT seen")
    if flt.thread_id is not None:
        clauses.append(f"thread_id = {arg(flt.thread_id)}")
    if flt.sender:
        clauses.append(f"(from_address->>'address') ILIKE {arg(_like(flt.sender))}")
    if flt.subject:
        clauses.append(f"subject ILIKE {arg(_like(flt.subject))}")
    if flt.since is not None:
        clauses.append(f"received_at >= {arg(flt.since)}")
    if flt.until is not None:
        clauses.append(f"received_at < {arg(flt.until)}")
    if flt.search:
        pattern = arg(_like(flt.search))
        clauses.append(
            f"(subject ILIKE {pattern} OR text_body ILIKE {pattern} "
            f"OR (from_address->>'address') ILIKE {pattern} "
            f"OR (from_address->>'name') ILIKE {pattern})"
        )
    return clauses, args


async def read_messages(
    connection: Connection,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    *,
    first: int,
    after: tuple[datetime, uuid.UUID] | None,
    flt: MessageFilter,
) -> tuple[list[MessageRow], bool]:
    """A page of an inbox's messages, newest first, after the keyset cursor ``after``."""
    clauses, args = _filter_sql(workspace_id, inbox_id, flt)
    if after is not None:
        clauses.append(f"(received_at, id) < (${len(args) + 1}, ${len(args) + 2})")
        args += list(after)
    args.append(first + 1)
    rows: list[MessageRow] = await connection.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM message WHERE {' AND '.join(clauses)} "  # noqa: S608
        f"ORDER BY received_at DESC, id DESC LIMIT ${len(args)}",
        *args,
        record_class=MessageRow,
    )
    return rows[:first], len(rows) > first


async def read_message(
    connection: Connection, workspace_id: uuid.UUID, message_id: uuid.UUID
) -> MessageRow | None:
    row: MessageRow | None = await connection.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM message WHERE id = $1 AND workspace_id = $2",  # noqa: S608
        message_id,
        workspace_id,
        record_class=MessageRow,
    )
    return row
