"""How far each folder of an inbox has been read, and what happens when a server renumbers
one. Written only while the caller holds the inbox's watch lease (``storage.messages.HELD``):
a process whose lease was taken over raises LeaseLost instead of writing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from storage.db import Connection
from storage.events import EventKind, announce_sql
from storage.messages import HELD, LeaseLost


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    last_uid: int
    updated_at: datetime  # when last_uid last moved (or reading started)


async def folder_state(
    connection: Connection, inbox_id: uuid.UUID, folder: str
) -> FolderState | None:
    record = await connection.fetchrow(
        "SELECT uidvalidity, last_uid, updated_at FROM folder_sync "
        "WHERE inbox_id = $1 AND folder = $2",
        inbox_id,
        folder,
    )
    if record is None:
        return None
    return FolderState(record["uidvalidity"], record["last_uid"], record["updated_at"])


START_FOLDER_SQL = f"""
    WITH held AS ({HELD})
    INSERT INTO folder_sync (inbox_id, folder, uidvalidity, last_uid, updated_at)
    SELECT held.id, $3, $4, $5, now() FROM held
    ON CONFLICT (inbox_id, folder) DO UPDATE
       SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = now()
    RETURNING inbox_id
"""  # noqa: S608


async def start_folder(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    folder: str,
    *,
    uidvalidity: int,
    last_uid: int,
) -> None:
    """Record where reading ``folder`` starts: the first time, or after its UIDVALIDITY
    changed (the old UIDs mean nothing any more; mail already stored stays, deduplicated by
    Message-ID should it be fetched again)."""
    started = await connection.fetchval(
        START_FOLDER_SQL, inbox_id, owner, folder, uidvalidity, last_uid
    )
    if started is None:
        raise LeaseLost(str(inbox_id))


RESET_FOLDER_SQL = f"""
    WITH held AS ({HELD}), renumbered AS (
        UPDATE message m SET uidvalidity = $4, uid = n.uid
          FROM held, unnest($6::text[], $7::bigint[]) AS n(message_id, uid)
         WHERE m.inbox_id = held.id AND m.folder = $3 AND m.uidvalidity <> $4
           AND m.message_id = n.message_id
        RETURNING m.id
    ), started AS (
        UPDATE folder_sync f SET uidvalidity = $4, last_uid = $5, updated_at = now()
          FROM held
         WHERE f.inbox_id = held.id AND f.folder = $3 AND f.uidvalidity <> $4
        RETURNING f.inbox_id, f.folder
    ), reset AS (
        SELECT held.id, held.workspace_id, held.version, held.status, started.folder
          FROM held JOIN started ON started.inbox_id = held.id
    ), notified AS (
        {announce_sql(EventKind.FOLDER_RESET, "reset")}
    )
    SELECT (SELECT count(*) FROM held) AS held,
           (SELECT count(*) FROM renumbered) AS renumbered,
           (SELECT count(*) FROM notified) AS notified
"""  # noqa: S608


async def reset_folder(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    folder: str,
    *,
    uidvalidity: int,
    last_uid: int,
    renumbered: dict[str, int],
) -> int:
    """The server renumbered ``folder``: read it from ``last_uid`` under ``uidvalidity``, give
    the stored messages found again (Message-ID -> new UID) their new UIDs, and announce one
    FOLDER_RESET, in one statement. How many stored messages were found again. A second call
    for the same UIDVALIDITY changes and announces nothing."""
    record = await connection.fetchrow(
        RESET_FOLDER_SQL,
        inbox_id,
        owner,
        folder,
        uidvalidity,
        last_uid,
        list(renumbered),
        list(renumbered.values()),
    )
    assert record is not None  # a SELECT of aggregates: always one row
    if not record["held"]:
        raise LeaseLost(str(inbox_id))
    found: int = record["renumbered"]
    return found
