"""Email inbox rows: create, read, list, update, delete, each one unit of work in a session.

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

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage import events, jobs
from storage.errors import (
    DuplicateEmailError,
    InboxLimitError,
    NotFoundError,
    SubscriptionInactiveError,
    VersionConflictError,
)
from storage.inbox_passwords import decrypt_password, encrypt_password
from storage.inbox_reads import INBOX_COLUMNS
from storage.models import ConnectionTest, EmailInbox, InboxStatus, utcnow
from storage.rows import InboxRow
from storage.secrets import KeyRing, Secret

# A change to any of these means the stored verification no longer describes the inbox.
CONNECTION_FIELDS = frozenset(
    f"{side}_{name}"
    for side in ("smtp", "imap")
    for name in ("host", "port", "security", "username", "password", "tls_certificate_sha256")
)


async def count_inboxes(session: AsyncSession, workspace_id: uuid.UUID) -> int:
    result = await session.execute(
        select(func.count())
        .select_from(EmailInbox)
        .where(col(EmailInbox.workspace_id) == workspace_id)
    )
    return int(result.scalar_one())


async def find_id_by_email(
    session: AsyncSession, workspace_id: uuid.UUID, email: str
) -> uuid.UUID | None:
    result = await session.execute(
        select(col(EmailInbox.id)).where(
            col(EmailInbox.workspace_id) == workspace_id, col(EmailInbox.email) == email
        )
    )
    return result.scalar_one_or_none()


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
            SELECT pg_notify('{jobs.JOBS_CHANNEL}', ''),
                   {
        events.notify_sql(
            "'TEST_CHANGED'",
            "t.workspace_id",
            "t.inbox_id",
            "t.version",
            test_id="t.id",
        )
    },
                   {
        events.notify_sql("'CREATED'", "i.workspace_id", "i.id", "i.version", status="i.status")
    }
              FROM test t, inbox i
        )
        SELECT inbox.* FROM inbox, audit, notified
    """  # noqa: S608


LOCK_WORKSPACE_SQL = (
    "SELECT subscription_active, max_inboxes FROM workspace WHERE id = $1 FOR UPDATE"
)
# With login spacing, the same statement also takes the two accounts' advisory locks.
LOCK_WORKSPACE_AND_ACCOUNTS_SQL = (
    "SELECT subscription_active, max_inboxes, pg_advisory_xact_lock(hashtext($2)), "
    "pg_advisory_xact_lock(hashtext($3)) FROM workspace WHERE id = $1 FOR UPDATE"
)
COUNT_SQL = (
    "SELECT count(*) AS usage, NULL::timestamptz AS latest FROM email_inbox WHERE workspace_id = $1"
)
# ... and the count also finds the accounts' latest scheduled login.
COUNT_AND_LATEST_LOGIN_SQL = (
    "SELECT (SELECT count(*) FROM email_inbox WHERE workspace_id = $1) AS usage, "  # noqa: S608
    f"({jobs.latest_login_query(2)}) AS latest"
)
FIND_BY_EMAIL_SQL = "SELECT id FROM email_inbox WHERE workspace_id = $1 AND email = $2"


async def create_inbox(
    connection: Any,
    *,
    workspace_id: uuid.UUID,
    values: Mapping[str, Any],
    smtp_password: Secret,
    imap_password: Secret,
    keyring: KeyRing,
    audit: AuditNote,
    spacing: timedelta = timedelta(0),
) -> InboxRow:
    """Insert an inbox in PENDING and queue its first verification, in one transaction.

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
            "smtp_password": encrypt_password(keyring, inbox_id, "smtp_password", smtp_password),
            "imap_password": encrypt_password(keyring, inbox_id, "imap_password", imap_password),
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


async def get_inbox(
    session: AsyncSession, workspace_id: uuid.UUID, inbox_id: uuid.UUID, *, for_update: bool = False
) -> EmailInbox:
    statement = select(EmailInbox).where(
        col(EmailInbox.id) == inbox_id, col(EmailInbox.workspace_id) == workspace_id
    )
    if for_update:
        statement = statement.with_for_update()
    inbox = (await session.execute(statement)).scalar_one_or_none()
    if inbox is None:
        raise NotFoundError("email inbox", inbox_id)
    return inbox


async def update_inbox(
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    inbox_id: uuid.UUID,
    changes: Mapping[str, Any],
    new_passwords: Mapping[str, Secret],
    keyring: KeyRing,
    expected_version: int | None = None,
    spacing: timedelta = timedelta(0),
) -> tuple[EmailInbox, ConnectionTest | None]:
    """Apply a partial update. A change to connection settings re-queues verification."""
    inbox = await get_inbox(session, workspace_id, inbox_id, for_update=True)
    if expected_version is not None and inbox.version != expected_version:
        raise VersionConflictError(expected_version, inbox.version)
    values: dict[str, Any] = {
        key: value for key, value in changes.items() if getattr(inbox, key) != value
    }
    for column, password in new_passwords.items():
        if decrypt_password(keyring, inbox, column) != password:  # compared in constant time
            values[column] = encrypt_password(keyring, inbox.id, column, password)
    if not values:
        return inbox, None
    reverify = bool(CONNECTION_FIELDS & values.keys())
    if reverify:
        values["status"] = InboxStatus.PENDING.value
        values["status_reason"] = None
    values["version"] = inbox.version + 1
    values["updated_at"] = utcnow()
    try:
        async with session.begin_nested():
            await session.execute(
                update(EmailInbox).where(col(EmailInbox.id) == inbox.id).values(**values)
            )
    except IntegrityError as exc:
        email = str(values.get("email", inbox.email))
        existing = await find_id_by_email(session, workspace_id, email)
        raise DuplicateEmailError(email, existing) from exc
    await session.refresh(inbox)
    test = None
    if reverify:
        await jobs.cancel_open_tests(session, inbox.id)
        test = await jobs.enqueue_test(session, inbox, reason="SETTINGS_CHANGED", spacing=spacing)
    await events.publish(
        session,
        events.Event(
            events.EventKind.UPDATED, workspace_id, inbox.id, inbox.version, status=inbox.status
        ),
    )
    if reverify:
        await events.publish(
            session,
            events.Event(
                events.EventKind.STATUS_CHANGED,
                workspace_id,
                inbox.id,
                inbox.version,
                status=inbox.status,
            ),
        )
    return inbox, test


async def delete_inbox(session: AsyncSession, workspace_id: uuid.UUID, inbox_id: uuid.UUID) -> None:
    inbox = await get_inbox(session, workspace_id, inbox_id, for_update=True)
    await session.delete(inbox)
    await session.flush()
    await events.publish(
        session,
        events.Event(events.EventKind.DELETED, workspace_id, inbox_id, inbox.version + 1),
    )


async def set_setup_status(
    session: AsyncSession, workspace_id: uuid.UUID, inbox_id: uuid.UUID, status: dict[str, Any]
) -> EmailInbox:
    """Store a fresh DNS setup check; subscribers hear of it as an update."""
    inbox = await get_inbox(session, workspace_id, inbox_id, for_update=True)
    await session.execute(
        update(EmailInbox)
        .where(col(EmailInbox.id) == inbox_id)
        .values(setup_status=status, version=inbox.version + 1, updated_at=utcnow())
    )
    await session.refresh(inbox)
    await events.publish(
        session,
        events.Event(
            events.EventKind.UPDATED, workspace_id, inbox.id, inbox.version, status=inbox.status
        ),
    )
    return inbox
