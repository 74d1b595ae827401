"""API keys: ``inbx_<prefix>_<secret>``, stored as a SHA-256 hash with the visible prefix.

The secret part has 256 bits of entropy, so a fast hash is enough: there is nothing to brute
force, and a slow KDF would put a CPU-bound step on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from storage.db import Connection
from storage.errors import NotFoundError
from storage.models import ApiKey, Permission, utcnow
from storage.rows import ApiKeyRow, columns

KEY_PREFIX = "inbx_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from an API key once per request or websocket connection."""

    api_key_id: uuid.UUID
    key_prefix: str
    workspace_id: uuid.UUID
    permissions: frozenset[str]

    def can(self, permission: Permission) -> bool:
        if permission is Permission.VIEW_EMAIL_INBOX:
            # Managing inboxes includes seeing them.
            return bool(
                {Permission.VIEW_EMAIL_INBOX.value, Permission.MANAGE_EMAIL_INBOX.value}
                & self.permissions
            )
        return permission.value in self.permissions


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or len(secret) < 32:
        return None
    return prefix


API_KEY_COLUMNS = columns(ApiKey)
CREATE_SQL = (
    "INSERT INTO api_key (id, workspace_id, name, prefix, key_hash, permissions, created_at) "  # noqa: S608
    f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {API_KEY_COLUMNS}"
)


async def create_api_key(
    connection: Connection,
    workspace_id: uuid.UUID,
    permissions: Iterable[Permission],
    *,
    name: str = "",
) -> tuple[ApiKeyRow, str]:
    """Returns the row and the plaintext key, which is shown once and never stored."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row: ApiKeyRow | None = await connection.fetchrow(
        CREATE_SQL,
        uuid.uuid4(),
        workspace_id,
        name,
        prefix,
        _hash(key),
        sorted({p.value for p in permissions}),
        utcnow(),
        record_class=ApiKeyRow,
    )
    assert row is not None  # an INSERT ... RETURNING without conditions returns its row
    return row, key


AUTHENTICATE_SQL = (
    "SELECT id, workspace_id, prefix, key_hash, permissions, last_used_at, revoked_at "
    "FROM api_key WHERE prefix = $1"
)
TOUCH_SQL = "UPDATE api_key SET last_used_at = $2 WHERE id = $1"


class KeyRefusal(StrEnum):
    """Why a key names no caller. UNKNOWN covers a wrong secret too: a visible prefix (it is in
    the audit trail) must not tell anyone more than a made-up key would."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"


async def check_api_key(
    connection: Connection, key: str, *, touch_interval: timedelta = timedelta(seconds=60)
) -> Principal | KeyRefusal:
    """The principal of ``key``, or why there is none: this runs on every request."""
    prefix = split_key(key)
    if prefix is None:
        return KeyRefusal.MALFORMED
    row = await connection.fetchrow(AUTHENTICATE_SQL, prefix)
    if row is None or not hmac.compare_digest(row["key_hash"], _hash(key)):
        return KeyRefusal.UNKNOWN
    if row["revoked_at"] is not None:  # said only to whoever holds the whole key
        return KeyRefusal.REVOKED
    now = utcnow()
    last_used = row["last_used_at"]
    # Recording every use would add a write to every read; a minute's precision is plenty.
    if last_used is None or now - last_used > touch_interval:
        await connection.execute(TOUCH_SQL, row["id"], now)
    return Principal(
        api_key_id=row["id"],
        key_prefix=row["prefix"],
        workspace_id=row["workspace_id"],
        permissions=frozenset(row["permissions"]),
    )


async def authenticate(
    connection: Connection, key: str, *, touch_interval: timedelta = timedelta(seconds=60)
) -> Principal | None:
    """The principal of ``key``, or None."""
    checked = await check_api_key(connection, key, touch_interval=touch_interval)
    return checked if isinstance(checked, Principal) else None


ACTIVE_KEYS_SQL = "SELECT id FROM api_key WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL"


async def active_api_keys(connection: Connection, ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """The ids among ``ids`` whose key exists and is not revoked: one statement for every key
    a process holds websocket connections for (the periodic revocation sweep)."""
    if not ids:
        return set()
    return {row["id"] for row in await connection.fetch(ACTIVE_KEYS_SQL, list(ids))}


# The first revocation's time stays: revoking twice changes nothing.
REVOKE_SQL = (
    "UPDATE api_key SET revoked_at = coalesce(revoked_at, $2) WHERE prefix = $1 "
    "RETURNING revoked_at"
)
LIST_SQL = f"SELECT {API_KEY_COLUMNS} FROM api_key WHERE workspace_id = $1 ORDER BY created_at"  # noqa: S608


async def revoke_api_key(connection: Connection, prefix: str) -> datetime:
    """Revoke by the whole key, its visible part (``inbx_<prefix>``) or the bare prefix."""
    prefix = split_key(prefix) or prefix.removeprefix(KEY_PREFIX).partition("_")[0]
    revoked_at: datetime | None = await connection.fetchval(REVOKE_SQL, prefix, utcnow())
    if revoked_at is None:
        raise NotFoundError("api key", prefix)
    return revoked_at


async def list_api_keys(connection: Connection, workspace_id: uuid.UUID) -> list[ApiKeyRow]:
    return await connection.fetch(LIST_SQL, workspace_id, record_class=ApiKeyRow)
