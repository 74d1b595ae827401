"""An OAuth inbox's tokens: read under a per-inbox lock for a refresh, written back without
making a change of the inbox (``inbox_changes.tokens``), and the inbox marked as needing its
account connected again.

The lock is a transaction-scoped advisory lock on the inbox, not its row lock: a refresh
waits on the provider, and the inbox's row must stay writable meanwhile (the worker's claim,
an update). Two processes that both find the token expiring take turns; the second finds the
first's fresh token and does not refresh again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from storage import inbox_changes
from storage.db import Connection
from storage.inbox_passwords import encrypt_password
from storage.inbox_reads import INBOX_COLUMNS
from storage.rows import InboxRow
from storage.secrets import KeyRing, Secret

LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('inboxd:oauth:' || $1::uuid::text))"
READ_SQL = f"SELECT {INBOX_COLUMNS} FROM email_inbox WHERE id = $1"  # noqa: S608

_STORE_CTE = inbox_changes.tokens(
    "inbox",
    {
        "oauth_access_token": "$2",
        "oauth_access_token_expires_at": "$3",
        "oauth_refresh_token": "coalesce($4, i.oauth_refresh_token)",
    },
    where="i.id = $1 AND i.auth_method = 'OAUTH2'",
    returning=INBOX_COLUMNS,
)
STORE_SQL = f"WITH {_STORE_CTE} SELECT * FROM inbox"  # noqa: S608

# Only an OAuth inbox whose tokens are still the ones found refused: a reconnection that
# stored new tokens meanwhile is not undone.
REAUTH_SQL = inbox_changes.statement(
    inbox_changes.change(
        "inbox",
        "status = 'FAILED', status_reason = $3, oauth_reauth_required_at = now()",
        where="i.id = $1 AND i.auth_method = 'OAUTH2' "
        "AND i.oauth_access_token IS NOT DISTINCT FROM $2",
    ),
    result="inbox.id",
)


async def lock_for_refresh(connection: Connection, inbox_id: uuid.UUID) -> InboxRow | None:
    """The inbox as it is now, its tokens locked until the caller's transaction ends."""
    await connection.execute(LOCK_SQL, inbox_id)
    row: InboxRow | None = await connection.fetchrow(READ_SQL, inbox_id, record_class=InboxRow)
    return row


async def store_refreshed(
    connection: Connection,
    keyring: KeyRing,
    inbox_id: uuid.UUID,
    *,
    access_token: Secret,
    expires_at: datetime | None,
    refresh_token: Secret | None,
) -> InboxRow | None:
    """Keep a refreshed access token (and the refresh token, when the provider rotated it)."""
    refresh = (
        None
        if refresh_token is None
        else encrypt_password(keyring, inbox_id, "oauth_refresh_token", refresh_token)
    )
    row: InboxRow | None = await connection.fetchrow(
        STORE_SQL,
        inbox_id,
        encrypt_password(keyring, inbox_id, "oauth_access_token", access_token),
        expires_at,
        refresh,
        record_class=InboxRow,
    )
    return row


async def require_reauth(connection: Connection, inbox: InboxRow, reason: str) -> bool:
    """The inbox is FAILED until its account is connected again; False when its tokens
    changed since ``inbox`` was read (nothing is written then)."""
    changed = await connection.fetchval(REAUTH_SQL, inbox.id, inbox.oauth_access_token, reason)
    return changed is not None


# Externally managed tokens (no refresh) past their expiry: FAILED the moment they run out,
# not at the inbox's next login, with the reason given. Then when the next one runs out.
_EXTERNAL = "i.auth_method = 'OAUTH2' AND NOT i.oauth_managed AND i.status <> 'FAILED'"
EXPIRE_EXTERNAL_SQL = inbox_changes.statement(
    inbox_changes.change(
        "inbox",
        "status = 'FAILED', status_reason = $1, oauth_reauth_required_at = now()",
        where=f"{_EXTERNAL} AND i.oauth_access_token_expires_at <= now()",
    ),
    result="inbox.id",
)
NEXT_EXTERNAL_EXPIRY_SQL = f"""
    SELECT extract(epoch FROM min(i.oauth_access_token_expires_at) - clock_timestamp())::float8
      FROM email_inbox AS i WHERE {_EXTERNAL}
"""  # noqa: S608


async def expire_external_tokens(connection: Connection, reason: str) -> float | None:
    """Fail the inboxes whose externally managed token has run out (``reason`` as their
    status reason); seconds until the next one does, None when none is left."""
    await connection.fetch(EXPIRE_EXTERNAL_SQL, reason)
    due_in: float | None = await connection.fetchval(NEXT_EXTERNAL_EXPIRY_SQL)
    return due_in
