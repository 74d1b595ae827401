"""The second look that makes IDLE safe: did mail land between the last read and IDLE?

Some servers report in IDLE only what changes after IDLE began (pymap's in-memory backend
does). Mail that lands between the watcher's last UID SEARCH and the server's acceptance of
IDLE would then wait for the IDLE re-issue, minutes later. So once IDLE is accepted the
receiver asks, on a second connection, for the folder's UIDNEXT (STATUS; RFC 3501 advises
against STATUS on the selected mailbox, hence another connection) and leaves IDLE if it moved.
With CONDSTORE it asks for HIGHESTMODSEQ too: a flag changed in another client in that gap
(Dovecot tells of it during whatever command runs then, where aioimaplib drops it) is read now
rather than with the next message.

That second connection is opened when IDLE starts. After a check the caller asks to ``keep``
(IDLE entered again after mail came: the inbox is busy) it stays open until ``linger`` seconds
pass without another check, so a busy inbox, woken again and again, reuses it instead of
logging in once per message. After any other check (the first IDLE of a session, IDLE entered
again after its re-issue interval or a message action) it is closed at once: a quiet inbox
(nearly all of them, most of the time) holds one IMAP connection, not two. Connections opened
for checks are bounded per process by ``slots``: 1,000 inboxes entering IDLE together do not
hold 2,000 TLS sessions at once, whose memory the process would keep after they close (B9 in
docs/benchmarks.md). Each connection is opened by the caller's ``opener``, which logs in
anew: an OAuth inbox's checker, opened hours into its session, logs in with a token that is
fresh then, not the one the session started with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from mail.imap_session import ImapSession

# Opens and logs in a new session (ImapSession.open with the endpoint as it is now).
Opener = Callable[[], Awaitable[ImapSession]]


class IdleChecker:
    """Owned by one watch task; ``close`` it when the task ends."""

    def __init__(
        self, opener: Opener, linger: float, slots: asyncio.Semaphore | None = None
    ) -> None:
        self._open = opener
        self._linger = linger
        self._slots = slots  # shared by the checkers of one process: connections being opened
        self._session: ImapSession | None = None
        self._closer: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def moved(
        self, folder: str, uidnext: int, highestmodseq: int | None = None, *, keep: bool = True
    ) -> bool:
        """Whether ``folder``'s UIDNEXT is past ``uidnext`` now, or its HIGHESTMODSEQ past
        ``highestmodseq`` (when given and the server keeps one). ``keep``: leave the
        connection open for ``linger`` seconds, else close it now. Raises ImapSessionError."""
        await self._keep()
        if self._session is not None and not self._session.lost:
            return await self._check(folder, uidnext, highestmodseq, keep)
        await self._drop()
        async with self._slots or contextlib.nullcontext():
            self._session = await self._open()
            return await self._check(folder, uidnext, highestmodseq, keep)

    async def _check(
        self, folder: str, uidnext: int, highestmodseq: int | None, keep: bool
    ) -> bool:
        assert self._session is not None
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
        if keep:
            self._closer = asyncio.create_task(self._close_later(), name="idle-checker-linger")
        else:
            await self._drop()
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
