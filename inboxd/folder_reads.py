"""What the receiver (``inboxd.receiver``) does with a folder's mail once it has read it: each
fetched message parsed and stored with its folder's progress, and a renumbered folder's
stored messages given their new UIDs."""

from __future__ import annotations

import dataclasses
import uuid
from contextlib import nullcontext
from datetime import timedelta

import structlog

from mail import imap_index
from mail.imap_session import Fetched, ImapSession, Mailbox
from mail.parse import parse_message
from storage import folder_sync, messages
from storage.db import Database
from storage.recent_messages import RecentlyStored
from storage.rows import InboxRow

log = structlog.get_logger("inboxd.receiver")

# A renumbered folder: mail that arrived this long before it was last read may still be new.
RESET_MARGIN = timedelta(minutes=5)


async def store_fetched(
    db: Database,
    owner: str,
    row: InboxRow,
    folder: str,
    uidvalidity: int,
    fetched: Fetched,
    *,
    max_attachment_bytes: int,
    max_message_bytes: int,
    recent: RecentlyStored | None,
) -> None:
    """Parse ``fetched`` and store it with its folder's progress (one transaction), the
    stored row kept in ``recent`` (if given) for this process's subscribers. Raises
    LeaseLost."""
    parsed = parse_message(
        fetched.raw,
        headers_only=fetched.headers_only,
        max_attachment_bytes=max_attachment_bytes,
    )
    if fetched.headers_only and parsed.parse_error is None:
        parsed.parse_error = (
            f"The message ({fetched.size} bytes) is larger than the limit of "
            f"{max_message_bytes} bytes: only its header was stored."
        )
    new = messages.NewMessage(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=fetched.uid,
        size=fetched.size,
        seen="\\seen" in fetched.flags,
        flagged="\\flagged" in fetched.flags,
        **dataclasses.asdict(parsed),
    )
    message_id = uuid.uuid4()
    keeping = recent.storing(message_id, row.workspace_id) if recent is not None else nullcontext()
    with keeping as stored:
        async with db.connection(background=True) as connection:
            kept = await messages.store_message(
                connection, row.id, owner, new, time_zone=row.time_zone, message_id=message_id
            )
        if stored is not None:
            stored.set_result(kept)


async def renumbered(
    db: Database,
    owner: str,
    session: ImapSession,
    row: InboxRow,
    folder: str,
    mailbox: Mailbox,
    known: folder_sync.FolderState,
) -> list[int]:
    """The server renumbered ``folder`` (UIDVALIDITY changed): stored messages get their
    new UIDs, one FOLDER_RESET is announced, and reading goes on from now; of what is
    there, only mail that arrived after the folder was last read is fetched (the UIDs to
    fetch). Old mail is never replayed as new; mail whose Message-ID is already stored is
    not stored again."""
    listed = await imap_index.index(session)
    stored = {m.message_id: m.uid for m in listed if m.message_id is not None}
    # Arrived since the folder last moved, with a margin for mail that landed while it was
    # being read and for the server's clock: stored ones are matched by Message-ID.
    since = known.updated_at - RESET_MARGIN
    fresh = [m.uid for m in listed if m.arrived is not None and m.arrived > since]
    async with db.connection(background=True) as connection:
        found = await folder_sync.reset_folder(
            connection,
            row.id,
            owner,
            folder,
            uidvalidity=mailbox.uidvalidity,
            last_uid=mailbox.uidnext - 1,
            renumbered=stored,
        )
    log.info(
        "receiving: folder renumbered",
        inbox_id=str(row.id),
        messages=len(listed),
        found_again=found,
        fetched=len(fresh),
    )
    return fresh + await session.uids_after(mailbox.uidnext - 1)
