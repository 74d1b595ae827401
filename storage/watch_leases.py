"""Who watches which inbox's mailbox: one lease per inbox, across every process.

Every ACTIVE, switched-on inbox with receiving enabled is watched by exactly one process: a
process claims inboxes whose lease is free or expired (a dead owner), renews the ones it holds,
and gives them back when it stops or the inbox no longer qualifies. Two processes claiming at
once never both win: the claim is one ``INSERT .. ON CONFLICT DO UPDATE .. WHERE`` and
Postgres re-checks the condition on the row the other committed.

Inboxes are shared out evenly: every receiving process registers itself
(``receiver_member``, renewed with its leases), and each holds at most its share, the
eligible inboxes divided by the live processes, rounded up. A process holding more gives the
surplus back (its watchers stop; the leases are freed at once) and one holding fewer claims
free ones, so a process that joins gets its share within a renewal or two, and the inboxes of
one that leaves (gracefully: at once; dead: when its leases expire) go to the others.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from storage import inbox_changes
from storage.db import Connection
from storage.models import EmailInbox, ReceivingState
from storage.rows import InboxRow, columns

INBOX_COLUMNS = columns(EmailInbox)

ELIGIBLE = "i.status = 'ACTIVE' AND i.active AND i.receiving_enabled"

CLAIM_SQL = f"""
    INSERT INTO inbox_watch (inbox_id, owner, expires_at, state, auth_failures)
    SELECT i.id, $1, now() + make_interval(secs => $2), 'CONNECTING', 0
      FROM email_inbox i LEFT JOIN inbox_watch w ON w.inbox_id = i.id
     WHERE {ELIGIBLE} AND (w.owner IS NULL OR w.expires_at < now())
     ORDER BY random()
     LIMIT $3
    ON CONFLICT (inbox_id) DO UPDATE
       SET owner = excluded.owner, expires_at = excluded.expires_at, state = 'CONNECTING'
     WHERE inbox_watch.owner IS NULL OR inbox_watch.expires_at < now()
    RETURNING inbox_id
"""  # noqa: S608

# Renew what this owner holds and still qualifies; with the inbox's version, so a watcher
# started before a change of settings is restarted with the new ones.
RENEW_SQL = f"""
    UPDATE inbox_watch w SET expires_at = now() + make_interval(secs => $2)
      FROM email_inbox i
     WHERE w.inbox_id = i.id AND w.owner = $1 AND w.inbox_id = ANY($3::uuid[]) AND {ELIGIBLE}
    RETURNING w.inbox_id, i.version
"""  # noqa: S608

RELEASE_SQL = """
    UPDATE inbox_watch SET owner = NULL, expires_at = NULL
     WHERE owner = $1 AND inbox_id = ANY($2::uuid[])
"""


SHARE_SQL = f"""
    WITH me AS (
        INSERT INTO receiver_member (owner, expires_at)
        VALUES ($1, now() + make_interval(secs => $2))
        ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at
        RETURNING owner
    ), gone AS (
        DELETE FROM receiver_member WHERE expires_at < now() - make_interval(secs => $2)
    )
    SELECT (SELECT count(*) FROM email_inbox i WHERE {ELIGIBLE}) AS eligible,
           (SELECT count(*) FROM receiver_member
             WHERE expires_at > now() AND owner <> $1) + 1 AS members
"""  # noqa: S608


async def share(connection: Connection, owner: str, *, lease_seconds: float) -> int:
    """Register ``owner`` as a live receiving process (for ``lease_seconds``) and return its
    share: how many inboxes it should watch, the eligible ones over the live processes."""
    record = await connection.fetchrow(SHARE_SQL, owner, lease_seconds)
    assert record is not None  # a SELECT of aggregates: always one row
    eligible, members = int(record["eligible"]), int(record["members"])
    return -(-eligible // members)


async def leave(connection: Connection, owner: str) -> None:
    await connection.execute("DELETE FROM receiver_member WHERE owner = $1", owner)


async def claim(
    connection: Connection, owner: str, *, lease_seconds: float, limit: int
) -> list[uuid.UUID]:
    if limit <= 0:
        return []
    return [r["inbox_id"] for r in await connection.fetch(CLAIM_SQL, owner, lease_seconds, limit)]


async def renew(
    connection: Connection, owner: str, inbox_ids: list[uuid.UUID], *, lease_seconds: float
) -> dict[uuid.UUID, int]:
    """The held inboxes that still qualify, by id, with their current version."""
    if not inbox_ids:
        return {}
    rows = await connection.fetch(RENEW_SQL, owner, lease_seconds, inbox_ids)
    return {r["inbox_id"]: r["version"] for r in rows}


async def release(connection: Connection, owner: str, inbox_ids: list[uuid.UUID]) -> None:
    if inbox_ids:
        await connection.execute(RELEASE_SQL, owner, inbox_ids)


@dataclass(frozen=True, slots=True)
class WatchError:
    code: str
    message: str
    hint: str | None = None


SET_STATE_SQL = """
    UPDATE inbox_watch SET state = $3, idle_supported = coalesce($4, idle_supported)
     WHERE inbox_id = $1 AND owner = $2
"""

# Connected and looked: the errors are over.
CHECKED_SQL = f"""
    WITH watch AS (
        UPDATE inbox_watch
           SET auth_failures = 0, last_error_code = NULL, last_error_message = NULL,
               last_error_hint = NULL
         WHERE inbox_id = $1 AND owner = $2
        RETURNING inbox_id
    ), {
    inbox_changes.counters(
        "inbox",
        {"last_check_at": "now()", "error_count": "0"},
        source="watch",
        where="i.id = watch.inbox_id",
    )
}
    SELECT count(*) FROM inbox
"""  # noqa: S608

# A failed check: counted, on the watch and on the inbox's counters. Whether it was the
# refused login that makes the inbox FAILED is decided here; that change is FAILED_CHANGE_SQL.
FAILED_CHECK_SQL = f"""
    WITH watch AS (
        UPDATE inbox_watch
           SET state = 'BACKOFF', last_error_code = $3, last_error_message = $4,
               last_error_hint = $5,
               auth_failures = CASE WHEN $6 THEN auth_failures + 1 ELSE 0 END
         WHERE inbox_id = $1 AND owner = $2
        RETURNING inbox_id, auth_failures
    ), {
    inbox_changes.counters(
        "inbox",
        {"last_check_at": "now()", "error_count": "i.error_count + 1"},
        source="watch w",
        where="i.id = w.inbox_id",
        returning="w.auth_failures",
    )
}
    SELECT auth_failures FROM inbox
"""  # noqa: S608

# Only an inbox still ACTIVE: one whose settings changed meanwhile is being verified anew,
# and a refusal of its old credentials says nothing about the new ones.
FAILED_CHANGE_SQL = inbox_changes.statement(
    inbox_changes.change(
        "inbox",
        "status = 'FAILED', status_reason = $2",
        where="i.id = $1 AND i.status = 'ACTIVE'",
    ),
    result="inbox.id",
)


async def set_state(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    state: ReceivingState,
    *,
    idle_supported: bool | None = None,
) -> None:
    await connection.execute(SET_STATE_SQL, inbox_id, owner, state.value, idle_supported)


async def record_checked(connection: Connection, inbox_id: uuid.UUID, owner: str) -> None:
    await connection.execute(CHECKED_SQL, inbox_id, owner)


async def record_failure(
    connection: Connection,
    inbox_id: uuid.UUID,
    owner: str,
    error: WatchError,
    *,
    auth: bool,
    auth_failure_limit: int,
) -> bool:
    """Count a failed connection; True when it was the ``auth_failure_limit``-th refused
    login in a row and the inbox is now FAILED (watching stops until its credentials
    change and it is verified again)."""
    async with connection.transaction():
        # Two statements: Postgres updates a row once per statement, and the counters and
        # the FAILED change are two updates of the inbox.
        auth_failures = await connection.fetchval(
            FAILED_CHECK_SQL, inbox_id, owner, error.code, error.message, error.hint, auth
        )
        if auth_failures is None or auth_failures < auth_failure_limit:
            return False
        reason = f"IMAP login refused while receiving mail: {error.message}"
        return await connection.fetchval(FAILED_CHANGE_SQL, inbox_id, reason) is not None


@dataclass(frozen=True, slots=True)
class WatchStatus:
    state: str
    idle_supported: bool | None
    error: WatchError | None


async def read_statuses(
    connection: Connection, inbox_ids: list[uuid.UUID]
) -> dict[uuid.UUID, WatchStatus]:
    rows = await connection.fetch(
        "SELECT inbox_id, owner, expires_at > now() AS live, state, idle_supported, "
        "last_error_code, last_error_message, last_error_hint "
        "FROM inbox_watch WHERE inbox_id = ANY($1::uuid[])",
        inbox_ids,
    )
    found = {}
    for r in rows:
        error = None
        if r["last_error_code"]:
            error = WatchError(r["last_error_code"], r["last_error_message"], r["last_error_hint"])
        state = r["state"] if r["live"] else ReceivingState.CONNECTING.value
        found[r["inbox_id"]] = WatchStatus(state, r["idle_supported"], error)
    return found


async def read_watched_inbox(connection: Connection, inbox_id: uuid.UUID) -> InboxRow | None:
    row: InboxRow | None = await connection.fetchrow(
        f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE id = $1",  # noqa: S608
        inbox_id,
        record_class=InboxRow,
    )
    return row
