"""The second look that makes IDLE safe: did mail land between the last read and IDLE?

Some servers report in IDLE only what changes after IDLE began (pymap's in-memory backend
does). Mail that lands between the watcher's last UID SEARCH and the server's acceptance of
IDLE would then wait for the IDLE re-issue, minutes later. So once IDLE is accepted the
receiver asks, on a second connection, for the folder's UIDNEXT (STATUS; RFC 3501 advises
against STATUS on the selected mailbox, hence another connection) and leaves IDLE if it moved.
With CONDSTORE it asks for HIGHESTMODSEQ too: a flag changed in another client in that gap
(Dovecot tells of it during whatever command runs then, where aioimaplib drops it) is read now
rather than with the next message.

That second connection is opened when IDLE starts and closed after ``linger`` seconds without
another check: a busy inbox, woken again and again, reuses it instead of logging in once per
message; a quiet one (nearly all of them, most of the time) holds one IMAP connection, not two,
which is what 1,000 watched inboxes in one process can afford (B9 in docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio

from mail.endpoint import Endpoint
from mail.imap_session import ImapSession, SessionSettings


class IdleChecker:
    """Owned by one watch task; ``close`` it when the task ends."""

    def __init__(self, endpoint: Endpoint, settings: SessionSettings, linger: float) -> None:
        self._endpoint = endpoint
        self._settings = settings
        self._linger = linger
        self._session: ImapSession | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def moved(self, folder: str, uidnext: int, highestmodseq: int | None = None) -> bool:
        """Whether ``folder``'s UIDNEXT is past ``uidnext`` now, or its HIGHESTMODSEQ past
        ``highestmodseq`` (when given and the server keeps one). Raises ImapSessionError."""
        await self._keep()
        if self._session is None or self._session.lost:
            await self._drop()
            self._session = await ImapSession.open(self._endpoint, self._settings)
        try:
            now = await self._session.status(folder)
            moved = now.uidnext > uidnext or (
                highestmodseq is not None
                and now.highestmodseq is not None
                and now.highestmodseq > highestmodseq
            )
        except BaseException:
            await self._drop()
            raise
        self._closer = asyncio.create_task(self._close_later(), name="idle-checker-linger")
        return moved

    async def close(self) -> None:
        await self._keep()
        await self._drop()

    async def _keep(self) -> None:
        """Call off a pending close (one already under way finishes first)."""
        closer, self._closer = self._closer, None
        if closer is not None:
            closer.cancel()
            # asyncio.wait, not ``await closer``: a cancellation of the caller itself must
            # propagate, not be taken for the closer's.
            await asyncio.wait([closer])
            if not closer.cancelled():
                closer.exception()  # retrieved: _drop logs nothing and raises nothing

    async def _close_later(self) -> None:
        await asyncio.sleep(self._linger)
        await asyncio.shield(self._drop())

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
