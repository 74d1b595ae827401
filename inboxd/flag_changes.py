"""Flags changed on the server, in another mail client, brought into inboxd (CONDSTORE only).

After a folder's new mail is read, the receiver (``inboxd.receiver``) calls ``sync_flags``
with what EXAMINE said of the folder and what was stored of it before that read. When the
folder's HIGHESTMODSEQ differs from the stored one, the messages read before (from the lowest
UID stored to the stored last UID) whose mod-sequence is past the stored one are asked for
(``mail.imap_changes``) and their seen and flagged set in one statement per batch
(``storage.folder_sync.record_flags``); then, in a statement of its own, the folder's
HIGHESTMODSEQ becomes EXAMINE's. A crash in between leaves the old one stored: the next sync
reads the same changes again (harmless).

Why "up to the stored last UID" is enough: the messages read in this sync were fetched after
EXAMINE, with their flags of that moment; any later change to them has a mod-sequence past
EXAMINE's HIGHESTMODSEQ, the one stored, and is read by the next sync. The IDLE checker asks
for HIGHESTMODSEQ too (``mail.idle_check``), so a change made between EXAMINE and IDLE ends
IDLE at once; one made during IDLE is reported by the server itself (an untagged FETCH).

inboxd's own STOREs (``inboxd.message_actions``) move HIGHESTMODSEQ as well: their messages
are read back with the flags inboxd set, which changes nothing. A flag whose change made in
inboxd has not reached the server yet keeps inboxd's value (``record_flags``).

Nobody is told: no event is sent for a flag changed elsewhere, as none is for one changed with
setMessageFlags; ``message``/``messages`` read the new flags. A mail client marking a whole
folder read would otherwise send a subscriber thousands of events, or one that says nothing a
re-read would not.

A folder seen for the first time has EXAMINE's HIGHESTMODSEQ stored and nothing read (what it
stores was fetched after EXAMINE). One without a stored HIGHESTMODSEQ (read before the server
offered CONDSTORE) or renumbered (new UIDVALIDITY: the messages found again still have their
flags from before) has every stored message's flags read once. A server without CONDSTORE, or
a folder it answers NOMODSEQ for, stores none, and nothing here happens.
"""

from __future__ import annotations

import uuid

import structlog

from mail.imap_changes import changed_flags
from mail.imap_session import ImapSession, Mailbox
from storage import folder_sync
from storage.db import Database
from storage.folder_sync import FlagChange, FolderState

log = structlog.get_logger("inboxd.flag_changes")


async def sync_flags(
    db: Database,
    session: ImapSession,
    inbox_id: uuid.UUID,
    owner: str,
    folder: str,
    mailbox: Mailbox,
    known: FolderState | None,
) -> int:
    """Bring the flags of ``folder``'s stored messages up to ``mailbox.highestmodseq``; how
    many messages changed. ``known``: the folder's state before this sync's read."""
    if mailbox.highestmodseq is None:
        return 0
    changed = 0
    if known is not None:
        same = known.uidvalidity == mailbox.uidvalidity
        since = known.highestmodseq if same else None
        if since == mailbox.highestmodseq:
            return 0
        # No stored mod-sequence (renumbered, or read before CONDSTORE) or one past the
        # server's (it should have renumbered the folder then): every message is asked for.
        start = since if since is not None and since < mailbox.highestmodseq else 0
        # Renumbered: the messages found again keep their flags from before.
        last_uid = known.last_uid if same else mailbox.uidnext - 1
        first_uid = (known.first_uid or last_uid + 1) if same else 1  # none stored: no read
        async for found in changed_flags(session, start, last_uid, first_uid=first_uid):
            changes = [
                FlagChange(uid, "\\seen" in flags, "\\flagged" in flags)
                for uid, flags in sorted(found.items())
            ]
            async with db.connection(background=True) as connection:
                changed += await folder_sync.record_flags(
                    connection,
                    inbox_id,
                    owner,
                    folder,
                    uidvalidity=mailbox.uidvalidity,
                    changes=changes,
                )
    async with db.connection(background=True) as connection:
        await folder_sync.record_flags(
            connection,
            inbox_id,
            owner,
            folder,
            uidvalidity=mailbox.uidvalidity,
            changes=[],
            highestmodseq=mailbox.highestmodseq,
        )
    if changed:
        log.info("flags changed on the server", inbox_id=str(inbox_id), messages=changed)
    return changed
