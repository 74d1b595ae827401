"""An inbox's two passwords: encrypted per row and column, and re-encrypted under a new key.

The ciphertext is bound to its table, column and row (``associated_data``), so a blob copied
to another row or column does not decrypt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from storage.models import EmailInbox
from storage.rows import InboxRow
from storage.secrets import DecryptionError, KeyRing, Secret, associated_data

TABLE = "email_inbox"
PASSWORD_COLUMNS = ("smtp_password", "imap_password")


def encrypt_password(keyring: KeyRing, inbox_id: uuid.UUID, column: str, password: Secret) -> bytes:
    """The one place a password is revealed on its way in: to be encrypted."""
    return keyring.encrypt(password.reveal(), associated_data(TABLE, column, inbox_id))


def decrypt_password(keyring: KeyRing, inbox: EmailInbox | InboxRow, column: str) -> Secret:
    blob: bytes = getattr(inbox, column)
    return keyring.decrypt(blob, associated_data(TABLE, column, inbox.id))


@dataclass(slots=True)
class RotationBatch:
    rotated: int
    unreadable: list[uuid.UUID]
    last_id: uuid.UUID | None  # None: no rows after ``after``; rotation is complete


async def rotate_secrets(
    session: AsyncSession,
    keyring: KeyRing,
    *,
    after: uuid.UUID | None = None,
    batch_size: int = 200,
) -> RotationBatch:
    """Re-encrypt the passwords of one batch of rows (by id, after ``after``) under the newest key.

    Rows are locked only for their batch's short transaction, so the API keeps serving: every
    process holds all keys and reads both old and new ciphertexts. A row that does not decrypt
    is reported and left as it is, never overwritten.
    """
    statement = select(EmailInbox).order_by(col(EmailInbox.id)).limit(batch_size).with_for_update()
    if after is not None:
        statement = statement.where(col(EmailInbox.id) > after)
    rows = list((await session.execute(statement)).scalars())
    rotated = 0
    unreadable: list[uuid.UUID] = []
    for inbox in rows:
        if not any(keyring.needs_rotation(getattr(inbox, c)) for c in PASSWORD_COLUMNS):
            continue
        try:
            values = {
                column: encrypt_password(
                    keyring, inbox.id, column, decrypt_password(keyring, inbox, column)
                )
                for column in PASSWORD_COLUMNS
            }
        except DecryptionError:
            unreadable.append(inbox.id)
            continue
        await session.execute(
            update(EmailInbox).where(col(EmailInbox.id) == inbox.id).values(**values)
        )
        rotated += 1
    return RotationBatch(rotated, unreadable, rows[-1].id if rows else None)
