"""A stored message changed through the API: its flags set, or it deleted (and remembered, so
it is never imported again). Each change queues the same on the mail server where the inbox's
settings say so (``storage.message_actions``), in the same statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from storage import message_actions
from storage.db import Connection
from storage.messages import MESSAGE_COLUMNS, MessageRow

SET_FLAGS_SQL = f"""
    WITH changed AS (
        UPDATE message SET seen = coalesce($3, seen), flagged = coalesce($4, flagged)
         WHERE id = $1 AND workspace_id = $2
        RETURNING {MESSAGE_COLUMNS}
    ), {
    message_actions.queue_sql(
        "queued",
        "SELECT id, inbox_id, folder, uidvalidity, uid, 'FLAGS', $3::boolean, $4::boolean "
        "FROM changed",
    )
}
    SELECT {MESSAGE_COLUMNS} FROM changed WHERE {message_actions.notified_sql("queued")} >= 0
"""  # noqa: S608


async def set_flags(
    connection: Connection,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    *,
    seen: bool | None,
    flagged: bool | None,
) -> MessageRow | None:
    """Set the message's flags (None: leave) and queue the same on the server; the message
    as it is now, or None when the workspace has no such message."""
    row: MessageRow | None = await connection.fetchrow(
        SET_FLAGS_SQL, message_id, workspace_id, seen, flagged, record_class=MessageRow
    )
    return row


DELETE_SQL = f"""
    WITH gone AS (
        DELETE FROM message WHERE id = $1 AND workspace_id = $2
        RETURNING id, inbox_id, folder, uidvalidity, uid, message_id
    ), remembered AS (
        INSERT INTO deleted_message (inbox_id, folder, uidvalidity, uid, message_id, deleted_at)
        SELECT inbox_id, folder, uidvalidity, uid, message_id, now() FROM gone
        ON CONFLICT DO NOTHING
    ), {
    message_actions.queue_sql(
        "queued",
        "SELECT g.id, g.inbox_id, g.folder, g.uidvalidity, g.uid, 'DELETE', NULL::boolean, "
        "NULL::boolean FROM gone g JOIN email_inbox i ON i.id = g.inbox_id "
        "WHERE i.delete_message_policy = 'DELETE_WHEN_DELETED'",
    )
}
    SELECT inbox_id, {message_actions.notified_sql("queued")} > 0 AS on_server FROM gone
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class DeletedMessage:
    inbox_id: uuid.UUID
    on_server: bool  # its deletion on the server was queued (DELETE_WHEN_DELETED)


async def delete_message(
    connection: Connection, workspace_id: uuid.UUID, message_id: uuid.UUID
) -> DeletedMessage | None:
    """Delete the message, remember it so it is never imported again, and, if the inbox's
    policy says so, queue its deletion on the server. None: the workspace has no such
    message."""
    record = await connection.fetchrow(DELETE_SQL, message_id, workspace_id)
    return DeletedMessage(record["inbox_id"], record["on_server"]) if record else None
