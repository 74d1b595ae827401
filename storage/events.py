"""Change events: written with ``pg_notify`` inside the transaction that made the change.

Postgres delivers a NOTIFY only when its transaction commits, so a subscriber never hears of a
change that was rolled back. A payload carries ids, the version the change produced and, for
an inbox, its status at that version, so the stream alone tells the sequence of statuses
(PENDING 1, VERIFYING 2, ACTIVE 3) however late a subscriber re-reads the rest.

Every payload is built here, by ``announce_sql``, in the statement that makes the change, from
the rows it wrote: a statement that changes many rows notifies for each. Inbox changes reach it
through ``storage.inbox_changes``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import orjson

CHANNEL = "inboxd_events"


class EventKind(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TEST_CHANGED = "TEST_CHANGED"
    MESSAGE_RECEIVED = "MESSAGE_RECEIVED"
    FOLDER_RESET = "FOLDER_RESET"
    # Internal: a message action was queued for the inbox's watcher (storage.message_actions).
    # No subscription passes it on: a client learns of flag changes by reading the message.
    MESSAGE_ACTION = "MESSAGE_ACTION"
    # An outgoing message was queued or changed state (storage.outbox, storage.outbox_runs).
    OUTGOING_CHANGED = "OUTGOING_CHANGED"


def payload_sql(
    kind: str,
    workspace_id: str,
    inbox_id: str,
    version: str,
    *,
    test_id: str = "NULL",
    status: str = "NULL",
    message_id: str | None = None,
    folder: str | None = None,
    outgoing: tuple[str, str] | None = None,
) -> str:
    """The SQL expression of an event's payload, from SQL expressions for its parts (column
    references or parameters). ``Event.decode`` reads it. Only message events carry 'm', only
    folder resets 'f', only outgoing messages 'o' (its id) and 'q' (its state)."""
    message = f", 'm', {message_id}" if message_id is not None else ""
    message += f", 'f', {folder}" if folder is not None else ""
    message += f", 'o', {outgoing[0]}, 'q', {outgoing[1]}" if outgoing is not None else ""
    return (
        f"json_build_object('k', {kind}, 'w', {workspace_id}, 'i', {inbox_id}, "
        f"'v', {version}, 't', {test_id}, 's', {status}{message})::text"
    )


def notify_sql(
    *parts: str,
    test_id: str = "NULL",
    status: str = "NULL",
    message_id: str | None = None,
    folder: str | None = None,
    outgoing: tuple[str, str] | None = None,
) -> str:
    """``pg_notify`` of ``payload_sql(*parts, ...)`` on the events channel."""
    kind, workspace_id, inbox_id, version = parts
    payload = payload_sql(
        kind,
        workspace_id,
        inbox_id,
        version,
        test_id=test_id,
        status=status,
        message_id=message_id,
        folder=folder,
        outgoing=outgoing,
    )
    return f"pg_notify('{CHANNEL}', {payload})"


def announce_sql(kind: EventKind, rows: str) -> str:
    """A SELECT sending a ``kind`` event for each row of ``rows`` (a CTE or table name).

    For TEST_CHANGED the rows are tests (id, inbox_id, workspace_id, version); otherwise they
    are inboxes (id, workspace_id, version, status), the version being the one the change
    produced. A deletion carries no status: the inbox has none any more. For MESSAGE_RECEIVED
    the inbox rows also carry ``message_id``, the stored message (the inbox is not changed:
    its version is the current one); so do they for MESSAGE_ACTION, the message acted on.
    For FOLDER_RESET they carry ``folder``, the folder the server renumbered. For
    OUTGOING_CHANGED the rows are outgoing messages (id, inbox_id, workspace_id, version,
    state): the version and state are the message's.
    """
    if kind in (EventKind.MESSAGE_RECEIVED, EventKind.MESSAGE_ACTION):
        notify = notify_sql(
            f"'{kind.value}'",
            "r.workspace_id",
            "r.id",
            "r.version",
            status="r.status",
            message_id="r.message_id",
        )
    elif kind is EventKind.FOLDER_RESET:
        notify = notify_sql(
            "'FOLDER_RESET'",
            "r.workspace_id",
            "r.id",
            "r.version",
            status="r.status",
            folder="r.folder",
        )
    elif kind is EventKind.OUTGOING_CHANGED:
        notify = notify_sql(
            "'OUTGOING_CHANGED'",
            "r.workspace_id",
            "r.inbox_id",
            "r.version",
            outgoing=("r.id", "r.state"),
        )
    elif kind is EventKind.TEST_CHANGED:
        notify = notify_sql(
            "'TEST_CHANGED'", "r.workspace_id", "r.inbox_id", "r.version", test_id="r.id"
        )
    else:
        status = "NULL" if kind is EventKind.DELETED else "r.status"
        notify = notify_sql(f"'{kind.value}'", "r.workspace_id", "r.id", "r.version", status=status)
    return f"SELECT {notify} FROM {rows} r"  # noqa: S608  (names from this package only)


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID
    version: int
    test_id: uuid.UUID | None = None
    # The inbox's status at ``version`` (None for test events and deletions).
    status: str | None = None
    # The stored message (MESSAGE_RECEIVED), the one acted on (MESSAGE_ACTION).
    message_id: uuid.UUID | None = None
    # The renumbered folder (FOLDER_RESET only).
    folder: str | None = None
    # The outgoing message and its state at ``version`` (OUTGOING_CHANGED only).
    outgoing_id: uuid.UUID | None = None
    outgoing_state: str | None = None

    @classmethod
    def decode(cls, payload: str) -> Event:
        data = orjson.loads(payload)
        return cls(
            kind=EventKind(data["k"]),
            workspace_id=uuid.UUID(data["w"]),
            inbox_id=uuid.UUID(data["i"]),
            version=int(data["v"]),
            test_id=uuid.UUID(data["t"]) if data.get("t") else None,
            status=data.get("s"),
            message_id=uuid.UUID(data["m"]) if data.get("m") else None,
            folder=data.get("f"),
            outgoing_id=uuid.UUID(data["o"]) if data.get("o") else None,
            outgoing_state=data.get("q"),
        )
