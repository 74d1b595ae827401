"""Receiving mail: one watch task per inbox this process holds the lease of.

The receiver claims watch leases (``storage.watch_leases``), renews them every third of the
lease, and runs a task per leased inbox that logs in over IMAP (``mail.imap_session``), reads
each folder from its last seen UID, stores every new message (``storage.messages``, one
transaction per message with its folder's progress and its notification) and then waits:
IDLE when the server offers it and one folder is watched, polling otherwise. A change of the
inbox (its version) restarts its task with the new settings; an inbox that stops qualifying
(not ACTIVE, switched off, receiving disabled) is given back. Inbox events wake the receiver,
so a newly verified inbox is watched at once rather than at the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aioimaplib
import structlog

from inboxd.claim_loop import new_worker_id
from inboxd.flag_changes import sync_flags
from inboxd.folder_reads import renumbered, store_fetched
from inboxd.message_actions import MessageActions
from inboxd.watch_tasks import WatchTasks
from mail.idle_check import IdleChecker
from mail.imap_session import Fetched, ImapSession, ImapSessionError, Mailbox, SessionSettings
from resolvers.logins import Logins, ReauthRequired, TokenUnavailable, is_oauth, open_imap
from resolvers.state import AppState
from storage import folder_sync, messages, watch_leases
from storage.db import UNAVAILABLE_ERRORS
from storage.events import Event, EventKind
from storage.models import ReceivingState
from storage.rows import InboxRow
from storage.secrets import DecryptionError

log = structlog.get_logger("inboxd.receiver")

WAKING_KINDS = {EventKind.CREATED, EventKind.UPDATED, EventKind.STATUS_CHANGED}
# A connection that broke for these reasons is network weather: reconnect with backoff.
TRANSIENT = (
    OSError,
    TimeoutError,
    aioimaplib.AioImapException,
    TokenUnavailable,
    *UNAVAILABLE_ERRORS,
)


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    session: SessionSettings
    lease_seconds: float = 60.0
    idle_interval: float = 600.0
    poll_interval: float = 30.0
    max_inboxes: int = 1000
    auth_failure_limit: int = 3
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    max_backfill_days: int = 30
    # An IDLE watcher's second connection closes after this long without a check.
    checker_linger: float = 60.0
    # IMAP connections (watch sessions, IDLE checkers) this process opens at once: 1,000
    # inboxes switched on together do not hold 1,000 TLS handshakes and logins in memory at
    # once, memory the process would keep once they are done (B9 in docs/benchmarks.md).
    opening_slots: int = 16
    max_attachment_bytes: int = 10 * 1024 * 1024


def backoff(attempt: int, base: float, cap: float) -> float:
    return float(min(cap, base * 2**attempt) * random.uniform(0.5, 1.0))


@dataclass
class Receiver:
    state: AppState
    config: ReceiverConfig
    owner: str = field(default_factory=new_worker_id)
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    watchers: WatchTasks = field(init=False)
    _task: asyncio.Task[None] | None = None
    _opening: asyncio.Semaphore | None = None
    _renewed_at: float | None = None  # loop time of the last renewal

    def __post_init__(self) -> None:
        self.watchers = WatchTasks(self._watch, self._release)

    @property
    def tasks(self) -> dict[uuid.UUID, asyncio.Task[None]]:
        """The running watch tasks, by inbox."""
        return self.watchers.running

    async def start(self) -> None:
        self._opening = asyncio.Semaphore(self.config.opening_slots)
        self._task = asyncio.create_task(self._loop(), name=f"receiver-{self.owner}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held = await self.watchers.stop_all()
        with contextlib.suppress(*UNAVAILABLE_ERRORS):
            async with self.state.db.connection(background=True) as connection:
                await watch_leases.release(connection, self.owner, held)
                await watch_leases.leave(connection, self.owner)

    async def _release(self, inbox_ids: list[uuid.UUID]) -> None:
        with contextlib.suppress(*UNAVAILABLE_ERRORS):  # not renewed now: it lapses
            async with self.state.db.connection(background=True) as connection:
                await watch_leases.release(connection, self.owner, inbox_ids)

    async def _loop(self) -> None:
        hub = self.state.hub
        assert hub is not None
        waker = asyncio.Event()
        watcher = hub.add(None, lambda e: e.kind in WAKING_KINDS, lambda _item: waker.set())
        failures = 0
        try:
            while True:
                waker.clear()
                try:
                    await self._tick()
                    failures = 0
                except UNAVAILABLE_ERRORS as exc:
                    log.warning("receiver: database unavailable", error=type(exc).__name__)
                    failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        waker.wait(),
                        self.config.lease_seconds / 3
                        if not failures
                        else backoff(failures, 0.5, 10),
                    )
        finally:
            hub.remove(watcher)

    async def _tick(self) -> None:
        """Renew what is held (watchers still stopping too), give back what no longer
        qualifies or is past this process's share (storage.watch_leases), claim free inboxes
        up to the share. Never waits for a watcher to stop (``inboxd.watch_tasks``)."""
        lease = self.config.lease_seconds
        watchers = self.watchers
        async with self.state.db.connection(background=True) as connection:
            sent = asyncio.get_running_loop().time()
            kept = await watch_leases.renew(
                connection, self.owner, watchers.held, lease_seconds=lease
            )
            if self._renewed_at is not None and sent - self._renewed_at > lease:
                # Another process may have taken these inboxes over meanwhile.
                late = round(sent - self._renewed_at, 1)
                log.warning("receiver: leases renewed after they lapsed", late=late)
            self._renewed_at = sent
            lost = [i for i, task in watchers.running.items() if i not in kept or task.done()]
            share = await watch_leases.share(connection, self.owner, lease_seconds=lease)
            share = min(share, self.config.max_inboxes)
            surplus = watchers.keeping - len(lost) - share
            if surplus > 0:
                # Handed over: the process that claims them reads on from the last seen UID.
                lost += random.sample([i for i in watchers.running if i not in lost], surplus)
            watchers.hand_back(lost)
            for inbox_id, version in kept.items():
                if inbox_id in watchers.running and self.versions.get(inbox_id, version) != version:
                    watchers.hand_back([inbox_id], restart=True)  # watch with the new settings
            for inbox_id in await watch_leases.claim(
                connection, self.owner, lease_seconds=lease, limit=share - watchers.keeping
            ):
                watchers.start(inbox_id)

    async def _watch(self, inbox_id: uuid.UUID) -> None:
        """Watch one inbox until cancelled, the lease is lost or its login keeps failing.
        The backoff grows with failures in a row: a session that got to watching starts the
        count again, so an outage of the server now and then never stretches the next
        reconnect towards the maximum."""
        attempt = 0

        def watching() -> None:
            nonlocal attempt
            attempt = 0

        while True:
            try:
                await self._session(inbox_id, watching)
                return  # the inbox is gone or unreadable
            except messages.LeaseLost:
                return
            except (DecryptionError, ReauthRequired) as exc:
                # No login to be had (the IDLE checker's): the inbox is FAILED now, or its
                # secret unreadable; it is watched again once new credentials are verified.
                log.warning("receiving: no login", inbox_id=str(inbox_id), error=type(exc).__name__)
                return
            except ImapSessionError as exc:
                error = watch_leases.WatchError(exc.code, exc.message, exc.hint)
                log.info("receiving failed", inbox_id=str(inbox_id), code=exc.code)
                if await self._record_failure(inbox_id, error, auth=exc.auth):
                    return  # FAILED: watched again once new credentials are verified
            except TRANSIENT as exc:
                error = watch_leases.WatchError(
                    "CONNECTION_LOST", f"The IMAP connection broke ({type(exc).__name__})."
                )
                log.info("receiving interrupted", inbox_id=str(inbox_id), error=type(exc).__name__)
                with contextlib.suppress(*UNAVAILABLE_ERRORS):
                    await self._record_failure(inbox_id, error, auth=False)
            await asyncio.sleep(backoff(attempt, self.config.backoff_base, self.config.backoff_max))
            attempt += 1

    async def _record_failure(
        self, inbox_id: uuid.UUID, error: watch_leases.WatchError, *, auth: bool
    ) -> bool:
        async with self.state.db.connection(background=True) as connection:
            return await watch_leases.record_failure(
                connection,
                inbox_id,
                self.owner,
                error,
                auth=auth,
                auth_failure_limit=self.config.auth_failure_limit,
            )

    async def _set_state(
        self, inbox_id: uuid.UUID, state: ReceivingState, idle_supported: bool | None = None
    ) -> None:
        async with self.state.db.connection(background=True) as connection:
            await watch_leases.set_state(
                connection, inbox_id, self.owner, state, idle_supported=idle_supported
            )

    async def _session(self, inbox_id: uuid.UUID, watching: Callable[[], None]) -> None:
        async with self.state.db.connection(background=True) as connection:
            row = await watch_leases.read_watched_inbox(connection, inbox_id)
        if row is None:
            return
        self.versions[inbox_id] = row.version
        logins = Logins(self.state.db, self.state.keyring, self.state.oauth)
        await self._set_state(inbox_id, ReceivingState.CONNECTING)
        try:
            async with self._opening or contextlib.nullcontext():
                session = await open_imap(logins, row, self.config.session)
        except (DecryptionError, ReauthRequired) as exc:
            # Reauth: the inbox is FAILED now, and given back; nothing to retry.
            log.warning("receiving: no login", inbox_id=str(inbox_id), error=type(exc).__name__)
            return

        async def open_checker() -> ImapSession:
            # Logged in anew each time with the token stored now: an OAuth inbox's token may
            # have been refreshed since the session opened (open_imap refreshes it once more
            # if the server refuses it). A password change restarts the watch instead.
            current = row
            if is_oauth(row):
                async with self.state.db.connection(background=True) as connection:
                    current = await watch_leases.read_watched_inbox(connection, inbox_id) or row
            return await open_imap(logins, current, self.config.session)

        checker = IdleChecker(open_checker, self.config.checker_linger, self._opening)
        actions = MessageActions(
            self.state,
            inbox_id,
            row.workspace_id,
            self.owner,
            session,
            backoff_base=self.config.backoff_base,
            backoff_max=self.config.backoff_max,
        )
        try:
            folders = list(row.receiving_folders) or ["INBOX"]
            idle = session.idle_supported and len(folders) == 1
            state = ReceivingState.IDLE if idle else ReceivingState.POLLING
            announced = False
            busy = False  # the last wait ended with mail: keep the IDLE checker's connection
            opened: dict[str, Mailbox] = {}
            read_to: dict[str, int] = {}  # each folder's highest UID read (or skipped) so far
            while True:
                # Every wake re-reads each folder from its last seen UID.
                session.forget_arrivals()
                await actions.apply()  # first: it SELECTs, and IDLE wants the folder EXAMINEd
                for folder in folders:
                    opened[folder], read_to[folder] = await self._sync(session, row, folder)
                if not announced:
                    # Only now: each folder's starting point is recorded, so mail arriving
                    # from here on is received, never taken for old mail.
                    await self._set_state(inbox_id, state, idle_supported=session.idle_supported)
                    announced = True
                    watching()
                if session.arrivals_noticed:
                    continue  # announced during the sync: read again before waiting
                async with self.state.db.connection(background=True) as connection:
                    await watch_leases.record_checked(connection, inbox_id, self.owner)
                if idle:
                    folder = folders[0]
                    await session.wait_for_change(
                        self.config.idle_interval, _arrived_since(checker, folder, opened, busy)
                    )
                    busy = session.arrivals_noticed
                    if busy:
                        read_to[folder] = await self._read_announced(
                            session, row, folder, opened[folder], read_to[folder]
                        )
                else:
                    await session.wait_polling(self.config.poll_interval)
        finally:
            actions.close()
            try:
                # The watching connection first, and whatever befalls the checker's close: it
                # must not outlive this task, whose lease is released once it ends.
                await session.close()
            finally:
                await checker.close()

    async def _sync(self, session: ImapSession, row: InboxRow, folder: str) -> tuple[Mailbox, int]:
        """Read ``folder`` from its last seen UID, then (CONDSTORE) the flags changed on the
        server since the last sync (``inboxd.flag_changes``); what EXAMINE said of it and the
        highest UID now read (or passed over as old)."""
        mailbox = await session.examine(folder)
        async with self.state.db.connection(background=True) as connection:
            known = await folder_sync.folder_state(connection, row.id, folder)
        if known is None:
            # First look: start from now, so nothing already there arrives as new (unless a
            # backfill was asked for).
            last_uid = mailbox.uidnext - 1
            days = min(row.receiving_backfill_days, self.config.max_backfill_days)
            if days > 0:
                since = (datetime.now(UTC) - timedelta(days=days)).date()
                backfill = await session.uids_since(since)
                if backfill:
                    last_uid = min(last_uid, backfill[0] - 1)
            async with self.state.db.connection(background=True) as connection:
                await folder_sync.start_folder(
                    connection,
                    row.id,
                    self.owner,
                    folder,
                    uidvalidity=mailbox.uidvalidity,
                    last_uid=last_uid,
                )
            uids = await session.uids_after(last_uid)
        elif known.uidvalidity != mailbox.uidvalidity:
            last_uid = mailbox.uidnext - 1
            uids = await renumbered(self.state.db, self.owner, session, row, folder, mailbox, known)
        else:
            last_uid = known.last_uid
            uids = await session.uids_after(known.last_uid)
        async for fetched in session.fetch(uids):
            await self._store(row, folder, mailbox.uidvalidity, fetched)
            last_uid = max(last_uid, fetched.uid)
        await sync_flags(self.state.db, session, row.id, self.owner, folder, mailbox, known)
        return mailbox, last_uid

    async def _read_announced(
        self, session: ImapSession, row: InboxRow, folder: str, mailbox: Mailbox, read_to: int
    ) -> int:
        """Mail the server announced in IDLE, read at once: the next UIDs after ``read_to`` of
        ``folder``, still the folder EXAMINEd (as ``mailbox``) for IDLE, up to a batch, in one
        round trip for most messages (``ImapSession.fetch_range``). The full read of every
        folder follows, as after any wake: it finds whatever this left (more than a batch,
        or a UID past a gap) by the stored last UID, and stores nothing twice (one statement
        per message advances the folder). The highest UID now read."""
        last = read_to + self.config.session.fetch_batch
        for fetched in await session.fetch_range(read_to + 1, last):
            await self._store(row, folder, mailbox.uidvalidity, fetched)
            read_to = max(read_to, fetched.uid)
        return read_to

    async def _store(self, row: InboxRow, folder: str, uidvalidity: int, fetched: Fetched) -> None:
        # The stored row is kept only for subscribers in this process (``inboxd worker``: none).
        hub = self.state.hub
        received = Event(EventKind.MESSAGE_RECEIVED, row.workspace_id, row.id, row.version)
        watched = hub is not None and hub.wanted(received)
        await store_fetched(
            self.state.db,
            self.owner,
            row,
            folder,
            uidvalidity,
            fetched,
            max_attachment_bytes=self.config.max_attachment_bytes,
            max_message_bytes=self.config.session.max_message_bytes,
            recent=self.state.recently_stored if watched else None,
        )


def _arrived_since(
    checker: IdleChecker, folder: str, opened: dict[str, Mailbox], busy: bool
) -> Callable[[], Awaitable[bool]]:
    """Whether ``folder`` gained mail (or, with CONDSTORE, changed) since it was last opened,
    asked on a second connection while the first is in IDLE (see ``mail.idle_check``), kept
    open for the next time when the inbox is ``busy``."""

    async def arrived() -> bool:
        mailbox = opened[folder]
        moved = await checker.moved(folder, mailbox.uidnext, mailbox.highestmodseq, keep=busy)
        return moved

    return arrived
