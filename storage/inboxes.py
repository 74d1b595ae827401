"""Email inbox rows: create, update, delete, each one transaction on an asyncpg connection
(reading them for display is ``storage.inbox_reads``).

Every query takes the caller's ``workspace_id``: an inbox of another workspace is
indistinguishable from one that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

import asyncpg

from storage import inbox_changes, jobs
from storage.db import Connection
from storage.errors import (
    DuplicateEmailError,
    InboxLimitError,
    NotFoundError,
    SubscriptionInactiveError,
    VersionConflictError,
)
from storage.events import EventKind, announce_sql
from storage.inbox_passwords import decrypt_password, encrypt_password
from storage.inbox_reads import INBOX_COLUMNS, READ_INBOX_SQL
from storage.models import InboxStatus, utcnow
from storage.rows import InboxRow, TestRow
from storage.secrets import DecryptionError, KeyRing, Secret

# A change to any of these means the stored verification no longer describes the inbox.
CONNECTION_FIELDS = frozenset(
    f"{side}_{name}"
    for side in ("smtp", "imap")
    for name in ("host", "port", "security", "username", "password", "tls_certificate_sha256")
) | {"auth_method", "oauth_provider", "oauth_access_token", "oauth_refresh_token"}


COUNT_SQL = (
    "SELECT count(*) AS usage, NULL::timestamptz AS latest FROM email_inbox WHERE workspace_id = $1"
)
FIND_BY_EMAIL_SQL = "SELECT id FROM email_inbox WHERE workspace_id = $1 AND email = $2"


async def count_inboxes(connection: Connection, workspace_id: uuid.UUID) -> int:
    found = await connection.fetchrow(COUNT_SQL, workspace_id)
    assert found is not None  # an aggregate always has its row
    return int(found["usage"])


async def find_id_by_email(
    connection: Connection, workspace_id: uuid.UUID, email: str
) -> uuid.UUID | None:
    found: uuid.UUID | None = await connection.fetchval(FIND_BY_EMAIL_SQL, workspace_id, email)
    return found


@dataclass(frozen=True, slots=True)
class AuditNote:
    """Who asked, for the audit row written in the same statement as the inbox."""

    api_key_prefix: str | None
    client_address: str | None
    details: dict[str, Any]


@cache
def _create_sql(insert_columns: tuple[str, ...]) -> str:
    """One statement for a new inbox: the inbox, its first test, the audit row and the
    notifications (the job queue's, TEST_CHANGED, CREATED), all only if the insert happened.

    Built from column names only (values are parameters); one text per column set, so
    asyncpg prepares it once per connection.
    """
    n = len(insert_columns)
    values = ", ".join(f"${i}" for i in range(1, n + 1))
    return f"""
        WITH inbox AS (
            INSERT INTO email_inbox ({", ".join(insert_columns)}) VALUES ({values})
            ON CONFLICT (workspace_id, email) DO NOTHING
            RETURNING {INBOX_COLUMNS}
        ), test AS (
            INSERT INTO connection_test (id, inbox_id, workspace_id, state, reason, round_trip,
                                         inbox_version, attempts, run_after, created_at, version)
            SELECT ${n + 1}, id, workspace_id, 'QUEUED', 'CREATED', false, version, 0,
                   greatest(now(), ${n + 2}::timestamptz), now(), 1
              FROM inbox
            RETURNING id, inbox_id, workspace_id, version
        ), audit AS (
            INSERT INTO audit_event (id, workspace_id, inbox_id, action, api_key_prefix,
                                     client_address, details, at)
            SELECT ${n + 3}, workspace_id, id, 'INBOX_CREATED', ${n + 4}, ${n + 5},
                   ${n + 6}::jsonb, now()
              FROM inbox
            RETURNING id
        ), notified AS (
            {jobs.wake_workers_sql("test")}
            UNION ALL {announce_sql(EventKind.TEST_CHANGED, "test")}
            UNION ALL {announce_sql(EventKind.CREATED, "inbox")}
        )
        SELECT inbox.* FROM inbox, audit, (SELECT count(*) FROM notified) AS sent
    """  # noqa: S608


LOCK_WORKSPACE_SQL = (
    "SELECT subscription_active, max_inboxes FROM workspace WHERE id = $1 FOR UPDATE"
)
# With login spacing, the same statement also takes the two accounts' advisory locks.
LOCK_WORKSPACE_AND_ACCOUNTS_SQL = (
    "SELECT subscription_active, max_inboxes, pg_advisory_xact_lock(hashtext($2)), "
    "pg_advisory_xact_lock(hashtext($3)) FROM workspace WHERE id = $1 FOR UPDATE"
)
# ... and the count also finds the accounts' latest scheduled login.
COUNT_AND_LATEST_LOGIN_SQL = (
    "SELECT (SELECT count(*) FROM email_inbox WHERE workspace_id = $1) AS usage, "  # noqa: S608
    f"({jobs.latest_login_query(2)}) AS latest"
)


async def create_inbox(
    connection: Connection,
    *,
    workspace_id: uuid.UUID,
    values: Mapping[str, Any],
    smtp_password: Secret | None,
    imap_password: Secret | None,
    keyring: KeyRing,
    audit: AuditNote,
    spacing: timedelta = timedelta(0),
    tokens: Mapping[str, Secret] | None = None,
) -> InboxRow:
    """Insert an inbox in PENDING and queue its first verification, in one transaction.

    An OAuth inbox has no passwords (None: stored empty) and its ``tokens`` instead (column:
    token), encrypted like the passwords.

    Runs on a plain asyncpg connection: through the ORM these were 13 statements (15 with
    login spacing) and most of the request's CPU; here they are 3 plus BEGIN and COMMIT.
    """
    smtp = (values["smtp_host"], values["smtp_username"])
    imap = (values["imap_host"], values["imap_username"])
    spaced = spacing > timedelta(0)
    async with connection.transaction():
        # The row lock serialises creates per workspace, so two concurrent creates cannot
        # both pass the plan limit; the advisory locks line up logins to the same accounts
        # (see jobs.spaced_start). The count (and the latest login) is its own statement,
        # run once the locks are held: in the same statement it would read a snapshot from
        # before them.
        if spaced:
            workspace = await connection.fetchrow(
                LOCK_WORKSPACE_AND_ACCOUNTS_SQL, workspace_id, *jobs.account_lock_keys(smtp, imap)
            )
        else:
            workspace = await connection.fetchrow(LOCK_WORKSPACE_SQL, workspace_id)
        if workspace is None:
            raise NotFoundError("workspace", workspace_id)
        if not workspace["subscription_active"]:
            raise SubscriptionInactiveError()
        if spaced:
            found = await connection.fetchrow(
                COUNT_AND_LATEST_LOGIN_SQL, workspace_id, spacing.total_seconds(), *smtp, *imap
            )
        else:
            found = await connection.fetchrow(COUNT_SQL, workspace_id)
        assert found is not None  # an aggregate always has its row
        usage, latest = found["usage"], found["latest"]
        if usage >= workspace["max_inboxes"]:
            raise InboxLimitError(usage, workspace["max_inboxes"])
        not_before = None if latest is None else latest + spacing
        inbox_id, test_id = uuid.uuid4(), uuid.uuid4()
        now = utcnow()
        row = {
            **values,
            "id": inbox_id,
            "workspace_id": workspace_id,
            "status": InboxStatus.PENDING.value,
            **{
                column: b""
                if secret is None
                else encrypt_password(keyring, inbox_id, column, secret)
                for column, secret in (
                    ("smtp_password", smtp_password),
                    ("imap_password", imap_password),
                    *(tokens or {}).items(),
                )
            },
            "created_at": now,
            "updated_at": now,
            "version": 1,
            "error_count": 0,
        }
        insert_columns = tuple(sorted(row))
        created: InboxRow | None = await connection.fetchrow(
            _create_sql(insert_columns),
            *(row[c] for c in insert_columns),
            test_id,
            not_before,
            uuid.uuid4(),
            audit.api_key_prefix,
            audit.client_address,
            audit.details,
            record_class=InboxRow,
        )
        if created is None:
            existing = await connection.fetchval(FIND_BY_EMAIL_SQL, workspace_id, values["email"])
            raise DuplicateEmailError(values["email"], existing)
        return created


LOCK_INBOX_SQL = READ_INBOX_SQL + " FOR UPDATE"


async def get_inbox(
    connection: Connection,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> InboxRow:
    """The inbox, or NotFoundError; ``for_update`` locks its row until the transaction ends."""
    inbox: InboxRow | None = await connection.fetchrow(
        LOCK_INBOX_SQL if for_update else READ_INBOX_SQL,
        inbox_id,
        workspace_id,
        record_class=InboxRow,
    )
    if inbox is None:
        raise NotFoundError("email inbox", inbox_id)
    return inbox


@cache
def _update_sql(set_columns: tuple[str, ...], reverify: bool) -> str:
    """One statement for an update: the inbox's new values (``$3`` on; ``$1`` the inbox,
    ``$2`` its workspace) and its events, UPDATED and, when its connection settings changed,
    STATUS_CHANGED, after cancelling its open tests (TEST_CHANGED each)."""
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(set_columns, start=3))
    announce = (EventKind.UPDATED, EventKind.STATUS_CHANGED) if reverify else (EventKind.UPDATED,)
    inbox = inbox_changes.change(
        "inbox",
        assignments,
        where="i.id = $1 AND i.workspace_id = $2",
        returning=INBOX_COLUMNS,
        announce=announce,
    )
    if not reverify:
        return inbox_changes.statement(inbox, result="inbox.*")
    return (
        f"WITH {jobs.CANCEL_OPEN_TESTS_CTE}, {inbox.cte}, "  # noqa: S608
        f"notified AS ({jobs.CANCELLED_NOTIFY} UNION ALL {inbox.notify}) "
        "SELECT inbox.* FROM inbox, (SELECT count(*) FROM notified) AS sent"
    )


async def update_inbox(
    connection: Connection,
    *,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    changes: Mapping[str, Any],
    new_passwords: Mapping[str, Secret],
    keyring: KeyRing,
    expected_version: int | None = None,
    spacing: timedelta = timedelta(0),
) -> tuple[InboxRow, TestRow | None]:
    """Apply a partial update in the caller's transaction. A change to connection settings
    cancels the open test and queues verification again."""
    inbox = await get_inbox(connection, workspace_id, inbox_id, for_update=True)
    if expected_version is not None and inbox.version != expected_version:
        raise VersionConflictError(expected_version, inbox.version)
    values: dict[str, Any] = {
        key: value for key, value in changes.items() if getattr(inbox, key) != value
    }
    for column, password in new_passwords.items():
        # Compared in constant time; nothing stored yet (an OAuth inbox's password, a first
        # token) or nothing readable is always a change.
        try:
            same = decrypt_password(keyring, inbox, column) == password
        except DecryptionError:
            same = False
        if not same:
            values[column] = encrypt_password(keyring, inbox.id, column, password)
    if not values:
        return inbox, None
    reverify = bool(CONNECTION_FIELDS & values.keys())
    if reverify:
        values["status"] = InboxStatus.PENDING.value
        values["status_reason"] = None
    set_columns = tuple(sorted(values))
    try:
        async with connection.transaction():  # a savepoint: a duplicate is looked up after
            updated: InboxRow | None = await connection.fetchrow(
                _update_sql(set_columns, reverify),
                inbox_id,
                workspace_id,
                *(values[c] for c in set_columns),
                record_class=InboxRow,
            )
    except asyncpg.UniqueViolationError as exc:
        email = str(values.get("email", inbox.email))
        existing = await find_id_by_email(connection, workspace_id, email)
        raise DuplicateEmailError(email, existing) from exc
    assert updated is not None  # the row is locked: it is still there
    test = None
    if reverify:
        test = await jobs.enqueue_test(
            connection, updated, reason="SETTINGS_CHANGED", spacing=spacing
        )
    return updated, test


DELETED = inbox_changes.delete("inbox", where="i.id = $1 AND i.workspace_id = $2")
DELETE_SQL = inbox_changes.statement(DELETED, result="inbox.id")


async def delete_inbox(
    connection: Connection, workspace_id: uuid.UUID, inbox_id: uuid.UUID
) -> None:
    """Delete the inbox (its tests go with it) and announce it, in one statement."""
    if await connection.fetchval(DELETE_SQL, inbox_id, workspace_id) is None:
        raise NotFoundError("email inbox", inbox_id)


SETUP_STATUS_SQL = inbox_changes.statement(
    inbox_changes.change(
        "inbox",
        "setup_status = $3::jsonb",
        where="i.id = $1 AND i.workspace_id = $2",
        returning=INBOX_COLUMNS,
        announce=(EventKind.UPDATED,),
    ),
    result="inbox.*",
)


async def set_setup_status(
    connection: Connection, workspace_id: uuid.UUID, inbox_id: uuid.UUID, status: dict[str, Any]
) -> InboxRow:
    """Store a fresh DNS setup check; subscribers hear of it as an update."""
    inbox: InboxRow | None = await connection.fetchrow(
        SETUP_STATUS_SQL, inbox_id, workspace_id, status, record_class=InboxRow
    )
    if inbox is None:
        raise NotFoundError("email inbox", inbox_id)
    return inbox
