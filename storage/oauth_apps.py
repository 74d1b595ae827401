"""A workspace's OAuth apps, and its authorizations in progress (``oauth_state``).

The client secret and the PKCE verifier are encrypted bound to their table, column and row
(as the inbox passwords are). Of ``state`` only a SHA-256 is kept: the value itself lives in
the authorization URL and comes back once, to the callback.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from storage.db import Connection
from storage.errors import NotFoundError
from storage.models import OAuthApp, OAuthState, utcnow
from storage.rows import OAuthAppRow, OAuthStateRow, columns
from storage.secrets import DecryptionError, KeyRing, Secret, associated_data

APP_COLUMNS = columns(OAuthApp)
STATE_COLUMNS = columns(OAuthState)

LIST_APPS_SQL = f"SELECT {APP_COLUMNS} FROM oauth_app WHERE workspace_id = $1 ORDER BY provider"  # noqa: S608
GET_APP_SQL = f"SELECT {APP_COLUMNS} FROM oauth_app WHERE workspace_id = $1 AND provider = $2"  # noqa: S608
LOCK_WORKSPACE_SQL = "SELECT id FROM workspace WHERE id = $1 FOR UPDATE"
INSERT_APP_SQL = f"""
    INSERT INTO oauth_app (id, workspace_id, provider, client_id, client_secret, tenant,
                           redirect_uri, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
    RETURNING {APP_COLUMNS}
"""  # noqa: S608
UPDATE_APP_SQL = f"""
    UPDATE oauth_app SET client_id = $2, client_secret = coalesce($3, client_secret),
                         tenant = $4, redirect_uri = $5, updated_at = now()
     WHERE id = $1
    RETURNING {APP_COLUMNS}
"""  # noqa: S608


def _secret_aad(app_id: uuid.UUID) -> bytes:
    return associated_data("oauth_app", "client_secret", app_id)


def client_secret(keyring: KeyRing, app: OAuthAppRow) -> Secret:
    return keyring.decrypt(app.client_secret, _secret_aad(app.id))


async def list_apps(connection: Connection, workspace_id: uuid.UUID) -> list[OAuthAppRow]:
    rows: list[OAuthAppRow] = await connection.fetch(
        LIST_APPS_SQL, workspace_id, record_class=OAuthAppRow
    )
    return rows


async def get_app(
    connection: Connection, workspace_id: uuid.UUID, provider: str
) -> OAuthAppRow | None:
    row: OAuthAppRow | None = await connection.fetchrow(
        GET_APP_SQL, workspace_id, provider, record_class=OAuthAppRow
    )
    return row


async def save_app(
    connection: Connection,
    keyring: KeyRing,
    *,
    workspace_id: uuid.UUID,
    provider: str,
    client_id: str,
    secret: Secret | None,
    tenant: str | None,
    redirect_uri: str,
) -> tuple[OAuthAppRow, bool]:
    """Create the workspace's app for ``provider`` or change it (``secret`` None keeps the
    stored one; a new app needs one). Returns the app and whether it was created."""
    async with connection.transaction():
        # Serialises configurations per workspace: the secret is bound to the row's id, so
        # two concurrent first configurations must not race to insert.
        if await connection.fetchval(LOCK_WORKSPACE_SQL, workspace_id) is None:
            raise NotFoundError("workspace", workspace_id)
        existing = await get_app(connection, workspace_id, provider)
        if existing is None:
            assert secret is not None  # the resolver asks for it
            app_id = uuid.uuid4()
            created: OAuthAppRow | None = await connection.fetchrow(
                INSERT_APP_SQL,
                app_id,
                workspace_id,
                provider,
                client_id,
                keyring.encrypt(secret.reveal(), _secret_aad(app_id)),
                tenant,
                redirect_uri,
                record_class=OAuthAppRow,
            )
            assert created is not None
            return created, True
        blob = (
            None if secret is None else keyring.encrypt(secret.reveal(), _secret_aad(existing.id))
        )
        updated: OAuthAppRow | None = await connection.fetchrow(
            UPDATE_APP_SQL,
            existing.id,
            client_id,
            blob,
            tenant,
            redirect_uri,
            record_class=OAuthAppRow,
        )
        assert updated is not None  # the workspace lock keeps the row
        return updated, False


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _verifier_aad(state_id: uuid.UUID) -> bytes:
    return associated_data("oauth_state", "code_verifier", state_id)


def code_verifier(keyring: KeyRing, row: OAuthStateRow) -> Secret:
    return keyring.decrypt(row.code_verifier, _verifier_aad(row.id))


# Long-expired authorizations are dropped whenever a new one starts.
PURGE_STATES_SQL = "DELETE FROM oauth_state WHERE expires_at < now() - interval '1 day'"
INSERT_STATE_SQL = f"""
    INSERT INTO oauth_state (id, state_hash, workspace_id, provider, code_verifier, inbox_id,
                             email_hint, api_key_prefix, client_address, created_at, expires_at,
                             inbox_settings)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
    RETURNING {STATE_COLUMNS}
"""  # noqa: S608


async def create_state(
    connection: Connection,
    keyring: KeyRing,
    *,
    workspace_id: uuid.UUID,
    provider: str,
    state: Secret,
    verifier: Secret,
    inbox_id: uuid.UUID | None,
    email_hint: str | None,
    inbox_settings: dict[str, Any] | None,
    expires_at: datetime,
    api_key_prefix: str | None,
    client_address: str | None,
) -> OAuthStateRow:
    state_id = uuid.uuid4()
    await connection.execute(PURGE_STATES_SQL)
    row: OAuthStateRow | None = await connection.fetchrow(
        INSERT_STATE_SQL,
        state_id,
        state_hash(state.reveal()),
        workspace_id,
        provider,
        keyring.encrypt(verifier.reveal(), _verifier_aad(state_id)),
        inbox_id,
        email_hint,
        api_key_prefix,
        client_address,
        utcnow(),
        expires_at,
        inbox_settings,
        record_class=OAuthStateRow,
    )
    assert row is not None
    return row


LOCK_STATE_SQL = f"SELECT {STATE_COLUMNS} FROM oauth_state WHERE state_hash = $1 FOR UPDATE"  # noqa: S608
USE_STATE_SQL = "UPDATE oauth_state SET used_at = now() WHERE id = $1"


class StateRefused(Exception):
    """The callback's ``state`` is unknown, was used already, or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def take_state(connection: Connection, state: str) -> OAuthStateRow:
    """The authorization ``state`` names, marked used in the caller's transaction: a state
    is taken once, and only before it expires."""
    row: OAuthStateRow | None = await connection.fetchrow(
        LOCK_STATE_SQL, state_hash(state), record_class=OAuthStateRow
    )
    if row is None:
        raise StateRefused("unknown")
    if row.used_at is not None:
        raise StateRefused("used")
    if row.expires_at <= utcnow():
        raise StateRefused("expired")
    await connection.execute(USE_STATE_SQL, row.id)
    return row


LOCK_ALL_APPS_SQL = f"SELECT {APP_COLUMNS} FROM oauth_app ORDER BY id FOR UPDATE"  # noqa: S608
SET_SECRET_SQL = "UPDATE oauth_app SET client_secret = $2 WHERE id = $1"


async def rotate_app_secrets(
    connection: Connection, keyring: KeyRing
) -> tuple[int, list[uuid.UUID]]:
    """Every app's client secret under the newest key, in one transaction (a workspace has
    one app per provider: few rows). Returns how many were re-encrypted and the apps whose
    secret no key decrypts (left as they are)."""
    rotated, unreadable = 0, []
    async with connection.transaction():
        apps: list[OAuthAppRow] = await connection.fetch(
            LOCK_ALL_APPS_SQL, record_class=OAuthAppRow
        )
        for app in apps:
            try:
                if not keyring.needs_rotation(app.client_secret):
                    continue
                secret = client_secret(keyring, app)
            except DecryptionError:
                unreadable.append(app.id)
                continue
            blob = keyring.encrypt(secret.reveal(), _secret_aad(app.id))
            await connection.execute(SET_SECRET_SQL, app.id, blob)
            rotated += 1
    return rotated, unreadable
