"""The copy of a SENT message in its mailbox's Sent folder, filed by the sending worker.

``file_copy``: right after the server accepted the message (the copy is also what keeps a successor
from sending it again when SENT could not be recorded). ``file_late_copy``: for a message whose
worker died before filing it, once its ``copy_due_at`` came due; composed again from the row,
dated when it was sent, and appended only if the folder does not hold its Message-ID.
"""

from __future__ import annotations

import uuid

import structlog

from inboxd.outbox_rules import Prepared
from mail.imap_session import SessionSettings
from mail.sent_folder import SentPool, append_once, append_to_sent
from resolvers.outgoing_mail import copies_to_sent_folder
from storage import outbox, outbox_runs
from storage.db import Database
from storage.outbox_runs import SendResult

log = structlog.get_logger("inboxd.outbox")


async def file_copy(
    db: Database,
    settings: SessionSettings,
    outgoing_id: uuid.UUID,
    prepared: Prepared,
    recorded: bool,
    pool: SentPool | None = None,
) -> None:
    """``pool``: on the inbox's kept session (``mail.sent_folder``); a copy it fails to
    store stays due (``copy_due_at``) and is filed late, looked for first."""
    try:
        folder = await append_to_sent(
            prepared.imap, settings, prepared.data, pool=pool, owner=str(prepared.inbox.id)
        )
    except Exception:
        log.warning("could not file the sent copy", outgoing_id=str(outgoing_id))
        return
    if folder is not None and recorded:
        async with db.connection(background=True) as connection:
            await outbox_runs.note_sent_folder(connection, outgoing_id, folder)


async def file_late_copy(
    db: Database,
    settings: SessionSettings,
    row: outbox.OutgoingRow,
    prepared: Prepared | SendResult | None,
) -> None:
    """``prepared`` None or a SendResult (too late, the inbox gone or its secret unreadable):
    no copy is due any more."""
    folder: str | None = None
    if isinstance(prepared, Prepared) and copies_to_sent_folder(prepared.inbox):
        folder = await append_once(prepared.imap, settings, prepared.data, row.message_id)
        if folder is None:
            return  # no Sent folder or the server failed: due again after the hold
    async with db.connection(background=True) as connection:
        await outbox_runs.note_sent_folder(connection, row.id, folder)
