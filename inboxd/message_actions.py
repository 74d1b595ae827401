"""Carrying message actions (``storage.message_actions``) to the IMAP server.

Who applies them: the receiver's task that holds the inbox's watch lease, on the IMAP session
it already has open, between two reads of the folders. Why there and not in a short-lived
session of the worker:
- the lease already makes that task the only one in the deployment acting for the inbox, so
  actions are applied in the order they were made and never by two processes at once, with no
  second kind of lock;
- it costs no login: providers limit sessions per account (Dovecot: 10 per user and address)
  and count logins, and the watcher's session is open anyway;
- an action is carried within a round trip or two: a MESSAGE_ACTION event (sent when the
  action commits) makes the session leave IDLE (``ImapSession.wake``), the action is applied,
  the folders are read and IDLE starts again.
An inbox nobody watches (receiving off, not ACTIVE) keeps its actions until it is watched.

The folder is opened with SELECT (read-write) and its UIDVALIDITY compared with the action's:
a UID of another UIDVALIDITY names nothing any more, and the action is dropped. Flags are set
with UID STORE (+FLAGS or -FLAGS, .SILENT); deletion is ``MailboxWrites.delete`` (UID EXPUNGE
with UIDPLUS). A command the server refuses leaves its actions for a retry after their backoff
(a timer wakes the session then); a connection that breaks leaves them likewise, and the
receiver reconnects. The folders are read after the actions, so the watched folder is the one
opened (with EXAMINE) when IDLE starts.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import structlog

from mail.imap_mailbox import CommandRefused
from mail.imap_session import ImapSession
from resolvers.state import AppState
from storage import message_actions, messages
from storage.events import Event, EventKind
from storage.message_actions import ActionRow, MessageActionKind

log = structlog.get_logger("inboxd.message_actions")

BATCH = 500  # actions claimed at once
GIVE_UP_AFTER = 20  # attempts refused by the server (about 1.5 h at the default backoff cap)
FLAGS = (("seen", "\\Seen"), ("flagged", "\\Flagged"))


class MessageActions:
    """The pending actions of one watched inbox, applied on its watcher's session."""

    def __init__(
        self,
        state: AppState,
        inbox_id: uuid.UUID,
        workspace_id: uuid.UUID,
        owner: str,
        session: ImapSession,
        *,
        backoff_base: float,
        backoff_max: float,
    ) -> None:
        self._state = state
        self._inbox_id = inbox_id
        self._owner = owner
        self._session = session
        self._backoff = (backoff_base, backoff_max)
        self._timer: asyncio.TimerHandle | None = None
        self.pending = True  # at first: anything queued while nobody watched
        assert state.hub is not None
        # RESYNC (the listener reconnected, events may be lost) is passed on as well.
        self._watcher = state.hub.add(
            workspace_id,
            lambda e: e.inbox_id == inbox_id and e.kind is EventKind.MESSAGE_ACTION,
            self._wanted,
        )

    def _wanted(self, _item: Event | object = None) -> None:
        self.pending = True
        self._session.wake()

    def close(self) -> None:
        assert self._state.hub is not None
        self._state.hub.remove(self._watcher)
        if self._timer is not None:
            self._timer.cancel()

    async def apply(self) -> None:
        """Apply the inbox's due actions, if any may be due. Raises LeaseLost."""
        if not self.pending:
            return
        self.pending = False
        base, cap = self._backoff
        async with self._state.db.connection(background=True) as connection:
            actions = await message_actions.claim(
                connection,
                self._inbox_id,
                self._owner,
                backoff_base=base,
                backoff_max=cap,
                limit=BATCH,
            )
        if actions is None:
            raise messages.LeaseLost(str(self._inbox_id))
        done: list[int] = []
        failed: list[int] = []
        error = None
        folders: dict[str, list[ActionRow]] = {}
        for action in actions:
            folders.setdefault(action.folder, []).append(action)
        for folder, group in folders.items():
            try:
                done += await self._apply_folder(folder, group)
            except CommandRefused as exc:
                error = exc.message
                given_up = [a.id for a in group if a.attempts >= GIVE_UP_AFTER]
                if given_up:
                    log.warning("message actions given up", inbox_id=str(self._inbox_id))
                done += given_up
                failed += [a.id for a in group if a.id not in given_up]
        async with self._state.db.connection(background=True) as connection:
            due = await message_actions.finish(
                connection, self._inbox_id, done=done, failed=failed, error=error
            )
        if len(actions) == BATCH:
            self.pending = True
        self._wake_at(due)

    async def _apply_folder(self, folder: str, actions: list[ActionRow]) -> list[int]:
        """The ids of ``actions`` (all in ``folder``) now applied. Raises CommandRefused."""
        uidvalidity = await self._session.select(folder)
        current = [a for a in actions if a.uidvalidity == uidvalidity]
        if len(current) < len(actions):
            log.info("message actions of an old UIDVALIDITY dropped", folder=folder)
        for action in current:
            if action.kind == MessageActionKind.FLAGS:
                for column, flag in FLAGS:
                    value = action[column]
                    if value is not None:
                        await self._session.set_flag([action.uid], flag, value)
        doomed = [a.uid for a in current if a.kind == MessageActionKind.DELETE]
        if doomed and not await self._session.delete(doomed):
            log.info("deleted messages left flagged: others are flagged \\Deleted too")
        return [a.id for a in actions]

    def _wake_at(self, due: datetime | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is not None:
            delay = max(0.0, (due - datetime.now(UTC)).total_seconds())
            self._timer = asyncio.get_running_loop().call_later(delay, self._wanted)
