"""The copy of a sent message in the mailbox's Sent folder, over the receiving side's IMAP
session (``mail.imap_session``: the outbound guard, TLS verified or pinned, LOGIN).

Guarantees:

- The folder is the one the server marks ``\\Sent`` (RFC 6154 special-use, in its LIST),
  else the first of "Sent", "Sent Items", "Sent Messages" (compared without regard to case,
  at the top level or as the last part of a path like "INBOX.Sent"), unless the caller names
  one. None is created: a mailbox without one gets no copy.
- ``append_to_sent`` stores the exact bytes sent, flagged \\Seen; ``find_in_sent`` asks the
  server for a message with that Message-ID header (UID SEARCH HEADER), so a retry after a
  crash can tell whether the message went out.
- One session per call, logged out at the end; or, for ``append_to_sent`` with a ``pool``
  (``mail.session_pool``), the inbox's idle session with its Sent folder as found the first
  time, kept again after a clean APPEND. A reused session that fails is closed and the copy
  is not stored (None): an APPEND whose answer was lost may have been stored, so it is not
  repeated blindly (the caller files it later with ``append_once``, which looks first).
- None raises for the server's behaviour: a failure is None ("no copy stored" / "could not
  tell"). The password is in no result.

Whether to append at all is the caller's decision: providers that file sent mail themselves
(Gmail, Microsoft 365, Outlook.com) would get a second copy.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mail.endpoint import Endpoint
from mail.imap_mailbox import Folder, quote_mailbox
from mail.imap_session import ImapSession, SessionSettings
from mail.message import is_control
from mail.session_pool import PoolLimits, SessionPool

T = TypeVar("T")

SENT_NAMES = ("sent", "sent items", "sent messages")
_MSG_ID = re.compile(r"^<[!-;=?-~]{1,900}>$")


@dataclass(slots=True)
class SentSession:
    """A logged-in session kept for the next copy, and the Sent folder it found."""

    session: ImapSession
    sent_folder: str | None = None


SentPool = SessionPool[SentSession]


def sent_pool(limits: PoolLimits) -> SentPool:
    """The Sent-folder sessions of one sending worker, by inbox; ``close`` logs them out."""

    async def log_out(kept: SentSession) -> None:
        await kept.session.close()

    return SessionPool(limits, lambda kept: not kept.session.lost, log_out, "imap-sent")


async def append_to_sent(
    endpoint: Endpoint,
    settings: SessionSettings,
    data: bytes,
    folder: str | None = None,
    *,
    pool: SentPool | None = None,
    owner: str = "",
) -> str | None:
    """Store ``data`` (flagged \\Seen) in ``folder``, else the Sent folder found by
    ``pick_sent_folder``. The folder used; None when there is none or the server failed.
    ``pool``: on ``owner``'s (an inbox's) kept session, kept again afterwards."""
    _check_folder(folder)

    async def store(kept: SentSession) -> str | None:
        chosen = folder or kept.sent_folder or pick_sent_folder(await kept.session.folders())
        if chosen is None:
            return None
        await kept.session.append(chosen, data, "(\\Seen)")
        if folder is None:
            kept.sent_folder = chosen
        return chosen

    if pool is None:
        return await _in_session(endpoint, settings, lambda session: store(SentSession(session)))
    idle = pool.take(owner, endpoint)
    uses = 0
    if idle is not None:
        kept, uses = idle
    else:
        try:
            kept = SentSession(await ImapSession.open(endpoint, settings))
        except Exception:
            return None
    try:
        chosen = await store(kept)
    except BaseException as exc:  # the session's errors and aioimaplib's (Abort, timeouts)
        pool.discard(kept)
        if isinstance(exc, Exception):
            return None
        raise
    pool.give_back(owner, endpoint, kept, uses + 1)
    return chosen


async def find_in_sent(
    endpoint: Endpoint, settings: SessionSettings, message_id: str, folder: str | None = None
) -> bool | None:
    """Whether the Sent folder (or ``folder``) holds a message with the header Message-ID
    ``message_id``. False when there is no such folder; None when the server could not be
    asked (connection, login or a command failed)."""
    if not _MSG_ID.match(message_id):
        raise ValueError("message_id must be a Message-ID like <id@domain>")
    _check_folder(folder)

    async def look(session: ImapSession) -> bool | None:
        chosen = folder or pick_sent_folder(await session.folders())
        if chosen is None:
            return False
        await session.examine(chosen)
        return bool(await session.search("HEADER", "Message-ID", quote_mailbox(message_id)))

    return await _in_session(endpoint, settings, look)


async def append_once(
    endpoint: Endpoint, settings: SessionSettings, data: bytes, message_id: str
) -> str | None:
    """Store ``data`` in the Sent folder unless a message with the header Message-ID
    ``message_id`` is there already; in one session. The folder that holds it; None when
    there is none or the server failed. For filing a copy late (its sender died before it
    could), when an earlier APPEND may have gone through."""
    if not _MSG_ID.match(message_id):
        raise ValueError("message_id must be a Message-ID like <id@domain>")

    async def file(session: ImapSession) -> str | None:
        chosen = pick_sent_folder(await session.folders())
        if chosen is None:
            return None
        await session.examine(chosen)
        if not await session.search("HEADER", "Message-ID", quote_mailbox(message_id)):
            await session.append(chosen, data, "(\\Seen)")
        return chosen

    return await _in_session(endpoint, settings, file)


def pick_sent_folder(folders: list[Folder]) -> str | None:
    """The folder marked \\Sent, else the first with a usual Sent name (top level first)."""
    for candidate in folders:
        if "\\sent" in candidate.attributes and "\\noselect" not in candidate.attributes:
            return candidate.name
    selectable = [f for f in folders if "\\noselect" not in f.attributes]
    for wanted in SENT_NAMES:
        for candidate in selectable:
            if candidate.name.lower() == wanted:
                return candidate.name
    for wanted in SENT_NAMES:
        for candidate in selectable:
            delimiter = candidate.delimiter
            if delimiter and candidate.name.lower().rsplit(delimiter, 1)[-1] == wanted:
                return candidate.name
    return None


def _check_folder(folder: str | None) -> None:
    if folder is not None and (not folder or any(is_control(ch) for ch in folder)):
        raise ValueError("folder must be a folder name without control characters")


async def _in_session(
    endpoint: Endpoint,
    settings: SessionSettings,
    work: Callable[[ImapSession], Awaitable[T | None]],
) -> T | None:
    """``work`` in a session of its own; None when opening it or the work failed."""
    session: ImapSession | None = None
    try:
        session = await ImapSession.open(endpoint, settings)
        return await work(session)
    except Exception:  # the session's errors and aioimaplib's (Abort, timeouts) alike
        return None
    finally:
        if session is not None:
            await session.close()
