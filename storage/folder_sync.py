"""How far each folder of an inbox has been read, and what happens when a server renumbers
one. Written only while the caller holds the inbox's watch lease (``storage.messages.HELD``):
a process whose lease was taken over raises LeaseLost instead of writing.

With CONDSTORE (``mail.imap_changes``) a folder also keeps the server's HIGHESTMODSEQ as of
the last time the flags of its stored messages were brought up to date (``record_flags``).
"""

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
    highestmodseq: int | None = None  # CONDSTORE: stored flags are as of this mod-sequence
    first_uid: int | None = None  # the lowest UID stored under uidvalidity (None: none stored)


async def folder_state(
    connection: Connection, inbox_id: uuid.UUID, folder: str
) -> FolderState | None:
    record = await connection.fetchrow(
        "SELECT f.uidvalidity, f.last_uid, f.updated_at, f.highestmodseq, "
        "(SELECT min(m.uid) FROM message m WHERE m.inbox_id = f.inbox_id "
        "AND m.folder = f.folder AND m.uidvalidity = f.uidvalidity) AS first_uid "
        "FROM folder_sync f WHERE f.inbox_id = $1 AND f.folder = $2",
        inbox_id,
        folder,
    )
    if record is None:
        return None
    return FolderState(
        record["uidvalidity"],
        record["last_uid"],
        record["updated_at"],
        record["highestmodseq"],
        record["first_uid"],
    )


START_FOLDER_SQL = f"""
    WITH held AS ({HELD})
    INSERT INTO folder_sync (inbox_id, folder, uidvalidity, last_uid, updated_at)
    SELECT held.id, $3, $4, $5, now() FROM held
    ON CONFLICT (inbox_id, folder) DO UPDATE
       SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = now(),
           highestmodseq = NULL
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
        UPDATE folder_sync f
           SET uidvalidity = $4, last_uid = $5, updated_at = now(), highestmodseq = NULL
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


# Per column, a flag that a message action still has to carry to the server (setMessageFlags
# made in inboxd, storage.message_actions) keeps its value: the server's is older.
_PENDING = """EXISTS (SELECT 1 FROM message_action a
     WHERE a.inbox_id = m.inbox_id AND a.folder = m.folder AND a.uidvalidity = m.uidvalidity
       AND a.uid = m.uid AND a.kind = 'FLAGS' AND a.{column} IS NOT NULL)"""

RECORD_FLAGS_SQL = f"""
    WITH held AS ({HELD}), changed AS (
        UPDATE message m
           SET seen = CASE WHEN {_PENDING.format(column="seen")} THEN m.seen ELSE n.seen END,
               flagged = CASE WHEN {_PENDING.format(column="flagged")}
                              THEN m.flagged ELSE n.flagged END
          FROM held, unnest($5::bigint[], $6::boolean[], $7::boolean[]) AS n(uid, seen, flagged)
         WHERE m.inbox_id = held.id AND m.folder = $3 AND m.uidvalidity = $4 AND m.uid = n.uid
           AND (m.seen, m.flagged) IS DISTINCT FROM (n.seen, n.flagged)
        RETURNING m.id
    ), advanced AS (
        UPDATE folder_sync f SET highestmodseq = $8
          FROM held
         WHERE $8::bigint IS NOT NULL AND f.inbox_id = held.id AND f.folder = $3
           AND f.uidvalidity = $4
    )
    SELECT (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM changed) AS changed
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class FlagChange:
    uid: int
    seen: bool
    flagged: bool


async def record_flags(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    folder: str,
    *,
    uidvalidity: int,
    changes: list[FlagChange],
    highestmodseq: int | None = None,
) -> int:
    """Give the stored messages of ``folder`` the flags the server reports for them (a flag
    with a pending message action keeps inboxd's value) and, when ``highestmodseq`` is given,
    record that the folder's flags are now as of it; one statement, whatever the number of
    changes. How many messages differed. Pass ``highestmodseq`` with the last batch only, so a
    crash before it leaves the old one stored and the next sync reads the changes again."""
    record = await connection.fetchrow(
        RECORD_FLAGS_SQL,
        inbox_id,
        owner,
        folder,
        uidvalidity,
        [c.uid for c in changes],
        [c.seen for c in changes],
        [c.flagged for c in changes],
        highestmodseq,
    )
    assert record is not None  # a SELECT of aggregates: always one row
    if not record["held"]:
        raise LeaseLost(str(inbox_id))
    changed: int = record["changed"]
    return changed
