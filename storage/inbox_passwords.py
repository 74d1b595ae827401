"""An inbox's secrets (its two passwords, its OAuth tokens): encrypted per row and column, and
re-encrypted under a new key.

The ciphertext is bound to its table, column and row (``associated_data``), so a blob copied
to another row or column does not decrypt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from storage import inbox_changes
from storage.db import Connection
from storage.models import EmailInbox
from storage.rows import InboxRow, columns
from storage.secrets import DecryptionError, KeyRing, Secret, associated_data

TABLE = "email_inbox"
PASSWORD_COLUMNS = ("smtp_password", "imap_password")
# Every encrypted column. Empty (an OAuth inbox's passwords) or NULL (a password inbox's
# tokens) holds no secret and stays as it is.
SECRET_COLUMNS = (*PASSWORD_COLUMNS, "oauth_refresh_token", "oauth_access_token")


def encrypt_password(keyring: KeyRing, inbox_id: uuid.UUID, column: str, password: Secret) -> bytes:
    """The one place a password is revealed on its way in: to be encrypted."""
    return keyring.encrypt(password.reveal(), associated_data(TABLE, column, inbox_id))


def decrypt_password(keyring: KeyRing, inbox: InboxRow, column: str) -> Secret:
    """The secret stored in ``column`` (a password or an OAuth token); DecryptionError when it
    does not decrypt, or nothing is stored."""
    blob: bytes | None = getattr(inbox, column)
    if not blob:
        raise DecryptionError(f"no {column} is stored")
    return keyring.decrypt(blob, associated_data(TABLE, column, inbox.id))


def _reencrypted(keyring: KeyRing, inbox: InboxRow, column: str) -> bytes | None:
    blob: bytes | None = getattr(inbox, column)
    if not blob:
        return blob
    return encrypt_password(keyring, inbox.id, column, decrypt_password(keyring, inbox, column))


@dataclass(slots=True)
class RotationBatch:
    rotated: int
    unreadable: list[uuid.UUID]
    last_id: uuid.UUID | None  # None: no rows after ``after``; rotation is complete


BATCH_SQL = (
    f"SELECT {columns(EmailInbox)} FROM email_inbox "  # noqa: S608
    "WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2 FOR UPDATE"
)
# The same passwords under the newest key: not a change of the inbox (no version, no event).
ROTATE_SQL = inbox_changes.reencrypt(
    "unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[]) "
    f"AS r(id, {', '.join(SECRET_COLUMNS)})",
    SECRET_COLUMNS,
)


async def rotate_secrets(
    connection: Connection,
    keyring: KeyRing,
    *,
    after: uuid.UUID | None = None,
    batch_size: int = 200,
) -> RotationBatch:
    """Re-encrypt the passwords of one batch of rows (by id, after ``after``) under the newest
    key, in one transaction.

    Rows are locked only for their batch's short transaction, so the API keeps serving: every
    process holds all keys and reads both old and new ciphertexts. A row that does not decrypt
    is reported and left as it is, never overwritten.
    """
    async with connection.transaction():
        rows = await connection.fetch(BATCH_SQL, after, batch_size, record_class=InboxRow)
        rotated: list[tuple[uuid.UUID, *tuple[bytes | None, ...]]] = []
        unreadable: list[uuid.UUID] = []
        for inbox in rows:
            try:
                if not any(
                    keyring.needs_rotation(blob)
                    for c in SECRET_COLUMNS
                    if (blob := getattr(inbox, c))
                ):
                    continue
                blobs = [_reencrypted(keyring, inbox, column) for column in SECRET_COLUMNS]
            except DecryptionError:
                unreadable.append(inbox.id)
                continue
            rotated.append((inbox.id, *blobs))
        if rotated:
            await connection.execute(ROTATE_SQL, *(list(c) for c in zip(*rotated, strict=True)))
    return RotationBatch(len(rotated), unreadable, rows[-1].id if rows else None)
