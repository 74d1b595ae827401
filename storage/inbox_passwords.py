"""An inbox's two passwords: encrypted per row and column, and re-encrypted under a new key.

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


def encrypt_password(keyring: KeyRing, inbox_id: uuid.UUID, column: str, password: Secret) -> bytes:
    """The one place a password is revealed on its way in: to be encrypted."""
    return keyring.encrypt(password.reveal(), associated_data(TABLE, column, inbox_id))


def decrypt_password(keyring: KeyRing, inbox: InboxRow, column: str) -> Secret:
    blob: bytes = getattr(inbox, column)
    return keyring.decrypt(blob, associated_data(TABLE, column, inbox.id))


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
    "unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS r(id, smtp_password, imap_password)"
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
        rotated: list[tuple[uuid.UUID, bytes, bytes]] = []
        unreadable: list[uuid.UUID] = []
        for inbox in rows:
            if not any(keyring.needs_rotation(getattr(inbox, c)) for c in PASSWORD_COLUMNS):
                continue
            try:
                smtp, imap = (
                    encrypt_password(
                        keyring, inbox.id, column, decrypt_password(keyring, inbox, column)
                    )
                    for column in PASSWORD_COLUMNS
                )
            except DecryptionError:
                unreadable.append(inbox.id)
                continue
            rotated.append((inbox.id, smtp, imap))
        if rotated:
            ids, smtp_passwords, imap_passwords = (list(c) for c in zip(*rotated, strict=True))
            await connection.execute(ROTATE_SQL, ids, smtp_passwords, imap_passwords)
    return RotationBatch(len(rotated), unreadable, rows[-1].id if rows else None)
