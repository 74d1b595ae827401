"""Flags changed in another mail client, read with CONDSTORE (RFC 7162) where it is offered.

A CONDSTORE server gives every change of a message (a new message, a flag set or cleared) a
mod-sequence, and each folder a HIGHESTMODSEQ, the highest of them. The receiver opens a folder
with ``EXAMINE folder (CONDSTORE)``, keeps its HIGHESTMODSEQ with the folder's progress
(``storage.folder_sync``) and, when it has moved, asks which of the messages it has read
changed since: ``UID SEARCH UID <first stored UID>:<last UID> MODSEQ <stored + 1>`` names
them (mail that was there before watching began is never stored, so never asked about), and
``UID FETCH <those> (UID FLAGS) (CHANGEDSINCE <stored>)`` reads their flags, in batches.

Why a SEARCH first rather than a FETCH of ``1:<last UID>`` in UID ranges: HIGHESTMODSEQ moves
with every message that arrives, so this runs after nearly every arrival, and a folder of
100,000 messages would cost 100,000 / batch FETCHes each time; the SEARCH answers in one line
(aioimaplib only recurses per line), and the FETCHes are as many as the changed messages need.

Without CONDSTORE none of this happens: flags are read only when a message arrives.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mail.imap_mailbox import flags_of

if TYPE_CHECKING:
    from mail.imap_session import ImapSession

_HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]", re.IGNORECASE)
_STATUS_HIGHESTMODSEQ = re.compile(rb"\bHIGHESTMODSEQ (\d+)", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
# What a SEARCH with a MODSEQ criterion adds after the numbers: "* SEARCH 2 5 (MODSEQ 917)".
MODSEQ_TAIL = re.compile(rb"\(MODSEQ \d+\)\s*$", re.IGNORECASE)
BATCH = 200  # messages per UID FETCH of flags: one response line each


def highest_modseq(text: bytes, *, status: bool = False) -> int | None:
    """The HIGHESTMODSEQ in an EXAMINE answer (a response code) or a STATUS answer; None when
    there is none (a folder the server keeps no mod-sequences for answers NOMODSEQ)."""
    match = (_STATUS_HIGHESTMODSEQ if status else _HIGHESTMODSEQ).search(text)
    return int(match.group(1)) if match else None


async def changed_flags(
    session: ImapSession, since: int, last_uid: int, batch: int = BATCH, *, first_uid: int = 1
) -> AsyncIterator[dict[int, frozenset[str]]]:
    """The flags (lowercased) of the messages of the open folder from ``first_uid`` to
    ``last_uid`` whose mod-sequence is past ``since``: batch by batch, UID -> flags."""
    if last_uid < max(first_uid, 1):
        return
    uids = await session.search("UID", f"{first_uid}:{last_uid}", "MODSEQ", str(since + 1))
    for start in range(0, len(uids), batch):
        chosen = uids[start : start + batch]
        asked = set(chosen)
        found: dict[int, frozenset[str]] = {}
        for text, _ in await session.fetch_items(chosen, f"(UID FLAGS) (CHANGEDSINCE {since})"):
            uid = _UID.search(text)
            if uid is not None and int(uid.group(1)) in asked:
                found[int(uid.group(1))] = flags_of(text)
        if found:
            yield found
