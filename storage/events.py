"""Change events: written with ``pg_notify`` inside the transaction that made the change.

Postgres delivers a NOTIFY only when its transaction commits, so a subscriber never hears of a
change that was rolled back. A payload carries ids, the version the change produced and, for
an inbox, its status at that version, so the stream alone tells the sequence of statuses
(PENDING 1, VERIFYING 2, ACTIVE 3) however late a subscriber re-reads the rest.

Every payload is built by ``payload_sql``, in the statement that makes the change, from the
row it wrote: statements that change many rows notify for each, and Python callers go through
``PUBLISH_SQL``, the same expression with parameters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import driver_connection

CHANNEL = "inboxd_events"


class EventKind(StrEnum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"
    STATUS_CHANGED = "STATUS_CHANGED"
    TEST_CHANGED = "TEST_CHANGED"
    MESSAGE_RECEIVED = "MESSAGE_RECEIVED"


def payload_sql(
    kind: str,
    workspace_id: str,
    inbox_id: str,
    version: str,
    *,
    test_id: str = "NULL",
    status: str = "NULL",
    message_id: str | None = None,
) -> str:
    """The SQL expression of an event's payload, from SQL expressions for its parts (column
    references or parameters). ``Event.decode`` reads it. Only message events carry 'm'."""
    message = f", 'm', {message_id}" if message_id is not None else ""
    return (
        f"json_build_object('k', {kind}, 'w', {workspace_id}, 'i', {inbox_id}, "
        f"'v', {version}, 't', {test_id}, 's', {status}{message})::text"
    )


def notify_sql(
    *parts: str, test_id: str = "NULL", status: str = "NULL", message_id: str | None = None
) -> str:
    """``pg_notify`` of ``payload_sql(*parts, ...)`` on the events channel."""
    kind, workspace_id, inbox_id, version = parts
    payload = payload_sql(
        kind, workspace_id, inbox_id, version, test_id=test_id, status=status, message_id=message_id
    )
    return f"pg_notify('{CHANNEL}', {payload})"


PUBLISH_SQL = "SELECT " + notify_sql(
    "$1::text", "$2::uuid", "$3::uuid", "$4::int", test_id="$5::uuid", status="$6::text"
)


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    workspace_id: uuid.UUID
    inbox_id: uuid.UUID
    version: int
    test_id: uuid.UUID | None = None
    # The inbox's status at ``version`` (None for test events and deletions).
    status: str | None = None
    # The stored message (MESSAGE_RECEIVED only).
    message_id: uuid.UUID | None = None

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
        )


async def publish(session: AsyncSession, event: Event) -> None:
    await (await driver_connection(session)).execute(
        PUBLISH_SQL,
        event.kind.value,
        event.workspace_id,
        event.inbox_id,
        event.version,
        event.test_id,
        event.status,
    )
