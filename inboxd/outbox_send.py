"""What becomes of one claimed outbox message: read what sending it needs, send it (or, after
an interrupted attempt, look for it in the Sent folder first), record the outcome, and file
its Sent copy. The exactly-once rules are in ``inboxd.outbox_worker``'s docstring.

SMTP sessions and Sent-folder sessions are the inbox's kept ones where there are
(``mail.smtp_pool``, ``mail.sent_folder``); every message still gets its own write-ahead
mark inside DATA (before the message's last line: ``mail.smtp_data``), pooled or not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from inboxd import sent_copies
from inboxd.outbox_rules import (
    COPY_GIVE_UP,
    UNKNOWN_HINT,
    UNKNOWN_REPLY,
    OutboxConfig,
    Prepared,
    retry_or_fail,
)
from mail.compose import ComposeError, compose, envelope_recipients
from mail.results import ProbeCode
from mail.send import SendOutcome, send_message
from mail.sent_folder import SentPool, find_in_sent, sent_pool
from mail.smtp_pool import SmtpPool, smtp_pool
from resolvers.logins import Logins, ReauthRequired, TokenUnavailable, is_oauth
from resolvers.outgoing_mail import copies_to_sent_folder, outgoing_from_row
from resolvers.state import AppState
from storage import inbox_reads, outbox, outbox_runs
from storage.db import UNAVAILABLE_ERRORS
from storage.models import utcnow
from storage.outbox_runs import ClaimedOutgoing, SendResult
from storage.rows import InboxRow
from storage.secrets import DecryptionError, Secret

log = structlog.get_logger("inboxd.outbox")

# Inboxes a worker keeps as last read (password inboxes only), the least recently used dropped.
KNOWN_INBOXES = 1024


@dataclass(slots=True)
class _Copy:
    """A Sent copy waiting for a filer; filed only before ``file_by`` (the loop's clock)."""

    outgoing_id: uuid.UUID
    prepared: Prepared
    recorded: bool
    file_by: float


@dataclass
class MessageSender:
    state: AppState
    config: OutboxConfig
    worker_id: str
    lease: timedelta
    # Messages whose SMTP transaction has begun (shared with the worker, which never
    # releases them: their lease runs out instead).
    transmitting: set[uuid.UUID]
    copy_concurrency: int = 8
    # Bytes of copies waiting for a filer, at most; a copy past it is filed late instead.
    copy_queue_bytes: int = 32 * 1024 * 1024
    smtp_sessions: SmtpPool = field(init=False)
    sent_sessions: SentPool = field(init=False)
    # Sent copies not filed yet (waiting or being filed), by message: none holds a sending
    # slot, and a send never waits for one.
    copying: dict[uuid.UUID, _Copy] = field(default_factory=dict)
    _copy_queue: collections.deque[_Copy] = field(default_factory=collections.deque)
    _queued_bytes: int = 0
    _filers: set[asyncio.Task[None]] = field(default_factory=set)
    # Clear while every sending slot is taken and more is due: sending goes first.
    _may_file: asyncio.Event = field(default_factory=asyncio.Event)
    # Inboxes read for earlier messages, the most recently used last (``_remember``).
    _inboxes: collections.OrderedDict[uuid.UUID, InboxRow] = field(
        default_factory=collections.OrderedDict
    )

    def __post_init__(self) -> None:
        self.smtp_sessions = smtp_pool(self.config.sessions)
        self.sent_sessions = sent_pool(self.config.sessions)
        self._may_file.set()

    def file_copies(self, allowed: bool) -> None:
        """Whether filers may begin another copy: the worker says no while every sending slot
        is taken and its claim found more due, yes once a claim leaves a slot free. Sends
        and copies share the machine and the mail servers; a burst is sent first, its copies
        follow (each one still filed before half the lease, or filed late)."""
        if allowed:
            self._may_file.set()
        else:
            self._may_file.clear()

    async def close(self) -> None:
        """End the kept sessions: QUIT and LOGOUT."""
        await self.smtp_sessions.close()
        await self.sent_sessions.close()

    async def record(self, outgoing_id: uuid.UUID, result: SendResult) -> outbox.OutgoingRow | None:
        async with self.state.db.connection(background=True) as connection:
            return await outbox_runs.record_result(connection, outgoing_id, self.worker_id, result)

    def _known_inbox(self, row: outbox.OutgoingRow, version: int | None) -> InboxRow | None:
        """The inbox as this worker last read it, if the claim found it at that version."""
        inbox = self._inboxes.get(row.inbox_id)
        if inbox is None or version is None or inbox.version != version:
            return None
        self._inboxes.move_to_end(row.inbox_id)
        return inbox

    def _remember(self, inbox: InboxRow) -> None:
        """Kept for the inbox's next message while its version stands. Not an OAuth inbox:
        a refreshed access token is written without a new version (``storage.inbox_changes
        .tokens``), so its row is read for every message."""
        if is_oauth(inbox):
            return
        self._inboxes[inbox.id] = inbox
        self._inboxes.move_to_end(inbox.id)
        while len(self._inboxes) > KNOWN_INBOXES:
            self._inboxes.popitem(last=False)

    async def _prepare(
        self,
        row: outbox.OutgoingRow,
        when: datetime | None = None,
        inbox_version: int | None = None,
    ) -> Prepared | SendResult | None:
        inbox = self._known_inbox(row, inbox_version)
        contents: list[bytes] = []
        # Most messages have no attachment, and most inboxes send more than one message:
        # then no query at all.
        if inbox is None or row.attachments:
            async with self.state.db.connection(background=True) as connection:
                if inbox is None:
                    inbox = await inbox_reads.read_inbox(connection, row.workspace_id, row.inbox_id)
                if row.attachments:
                    contents = await outbox.read_attachment_contents(connection, row.id)
            if inbox is None:
                return None  # deleted: its outbox goes with it
            self._remember(inbox)
        try:
            smtp, imap = await self._logins.endpoints(inbox)
        except DecryptionError:
            return SendResult(
                "FAILED",
                None,
                "The inbox's stored password can no longer be decrypted; nothing was sent.",
                "Re-enter the password (updateEmailInbox), then send the message again.",
            )
        except ReauthRequired as exc:
            return SendResult("FAILED", None, f"{exc.message} Nothing was sent.", exc.hint)
        except TokenUnavailable:
            return retry_or_fail(
                row,
                self.config,
                None,
                "The OAuth provider could not be reached to refresh the access token.",
                None,
            )
        message = outgoing_from_row(inbox, row, contents, when or utcnow())
        try:
            data = compose(message, max_bytes=self.config.max_message_bytes)
        except ComposeError as exc:
            return SendResult("FAILED", None, f"{exc.field}: {exc.message}", "Fix it and resend.")
        return Prepared(inbox, smtp, imap, data, envelope_recipients(message))

    @property
    def _logins(self) -> Logins:
        return Logins(self.state.db, self.state.keyring, self.state.oauth)

    async def _token_refused_again(self, prepared: Prepared) -> SendResult | None:
        """After an OAuth inbox's login was refused: a refreshed token for the one retry
        (None), or why there is none."""
        rejected = prepared.smtp.password
        assert isinstance(rejected, Secret)
        try:
            prepared.smtp, prepared.imap = await self._logins.endpoints(
                prepared.inbox, rejected=rejected
            )
        except ReauthRequired as exc:
            return SendResult("FAILED", None, f"{exc.message} Nothing was sent.", exc.hint)
        except (TokenUnavailable, DecryptionError):
            return SendResult(
                "FAILED", None, "The access token was refused and could not be refreshed.", None
            )
        return None

    async def send(self, claimed: ClaimedOutgoing) -> None:
        row = claimed.row
        prepared = await self._prepare(row, inbox_version=claimed.inbox_version)
        if prepared is None:
            return
        if isinstance(prepared, SendResult):
            await self.record(row.id, prepared)
            return
        if row.data_started_at is not None:
            await self._settle_unknown(row, prepared)
            return
        if claimed.recovering:
            found = await find_in_sent(prepared.imap, self.config.imap, row.message_id)
            if found is None:
                await self.record(
                    row.id,
                    retry_or_fail(
                        row,
                        self.config,
                        None,
                        "An interrupted send could not be checked: the Sent folder could not "
                        "be read.",
                        "Check the Sent folder; if it is not there, send it again.",
                    ),
                )
                return
            if found:
                reply = "Found in the Sent folder after an interrupted send; not sent again."
                await self.record(row.id, SendResult("SENT", None, reply))
                return
        self.transmitting.add(row.id)
        outcome = await self._transmit(row.id, prepared)
        if outcome.login_code is ProbeCode.TOKEN_REJECTED and is_oauth(prepared.inbox):
            # Refused at login, before MAIL FROM: nothing was sent. One refresh, one retry.
            refused = await self._token_refused_again(prepared)
            if refused is not None:
                await self.record(row.id, refused)
                return
            outcome = await self._transmit(row.id, prepared)
        if outcome.accepted:
            await self._sent(row, prepared, outcome.code, outcome.reply, outcome.refused)
        elif outcome.unknown:
            # The server may have it: the next attempt only looks for it (_settle_unknown),
            # after the backoff, which gives a provider that files sent mail itself time to.
            result = retry_or_fail(row, self.config, None, outcome.reply, None)
            await self.record(row.id, dataclasses.replace(result, keep_data_mark=True))
        elif outcome.withheld:
            # Not marked (the database away, or the lease lost): nothing was sent.
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                result = retry_or_fail(row, self.config, None, outcome.reply, None)
                await self.record(row.id, dataclasses.replace(result, uncounted=True))
        elif outcome.permanent:
            result = SendResult("FAILED", outcome.code, outcome.reply, outcome.hint)
            await self.record(row.id, result)
        else:
            await self.record(
                row.id, retry_or_fail(row, self.config, outcome.code, outcome.reply, outcome.hint)
            )

    async def _settle_unknown(self, row: outbox.OutgoingRow, prepared: Prepared) -> None:
        """An earlier attempt began DATA and never heard the server's answer (its worker died,
        or the connection dropped): the server may have the message. Found in the Sent folder
        it is SENT; otherwise it is FAILED with that said, never sent a second time."""
        found = await find_in_sent(prepared.imap, self.config.imap, row.message_id)
        if found:
            reply = "Found in the Sent folder after an interrupted send; not sent again."
            await self.record(row.id, SendResult("SENT", None, reply))
        elif found is None:
            result = retry_or_fail(
                row,
                self.config,
                None,
                "An interrupted send could not be checked: the Sent folder could not be read.",
                "Check the Sent folder; if it is not there, send it again.",
            )
            await self.record(
                row.id, dataclasses.replace(result, uncounted=True, keep_data_mark=True)
            )
        else:
            await self.record(row.id, SendResult("FAILED", None, UNKNOWN_REPLY, UNKNOWN_HINT))

    async def _transmit(self, outgoing_id: uuid.UUID, prepared: Prepared) -> SendOutcome:
        async def mark() -> bool:
            """The write-ahead mark, committed before the message's last line
            (``mail.smtp_data``)."""
            try:
                async with self.state.db.connection(background=True) as connection:
                    return await outbox_runs.mark_data_started(
                        connection, outgoing_id, self.worker_id
                    )
            except UNAVAILABLE_ERRORS:
                return False

        return await send_message(
            prepared.smtp,
            self.config.smtp,
            envelope_from=prepared.inbox.email,
            recipients=prepared.recipients,
            data=prepared.data,
            before_data=mark,
            pool=self.smtp_sessions,
            owner=str(prepared.inbox.id),
        )

    async def _sent(
        self,
        row: outbox.OutgoingRow,
        prepared: Prepared,
        code: int | None,
        reply: str,
        refused: dict[str, str],
    ) -> None:
        wants_copy = copies_to_sent_folder(prepared.inbox)
        # Due for another worker only if this one dies before filing it.
        copy_due = utcnow() + self.lease if wants_copy else None
        result = SendResult("SENT", code, reply, refused=refused, copy_due_at=copy_due)
        recorded = False
        try:
            recorded = await self.record(row.id, result) is not None
        finally:
            # Unrecorded (the database away), the Sent copy is what keeps a successor from
            # sending it again: filed either way.
            if wants_copy:
                await self._file_copy_soon(row.id, prepared, recorded)

    async def _file_copy_soon(
        self, outgoing_id: uuid.UUID, prepared: Prepared, recorded: bool
    ) -> None:
        """Queue the Sent copy for a filer, so the sending slot is free at SENT and the next
        send never waits for an APPEND: at most ``copy_concurrency`` are filed at once, the
        oldest first, while ``file_copies`` allows. A copy that would take the queue past
        ``copy_queue_bytes``, or that waited for a filer until half the lease
        (``copy_due_at``) was gone, is left due and filed late (composed again, looked for
        first), so a queue never holds the process's memory or races another worker's late
        filing."""
        size = len(prepared.data)
        if self._queued_bytes + size > self.copy_queue_bytes and self._copy_queue:
            log.info("sent copy left to be filed late", outgoing_id=str(outgoing_id))
            return
        loop = asyncio.get_running_loop()
        copy = _Copy(outgoing_id, prepared, recorded, loop.time() + self.lease.total_seconds() / 2)
        self._copy_queue.append(copy)
        self._queued_bytes += size
        self.copying[outgoing_id] = copy
        if len(self._filers) < self.copy_concurrency:
            filer = asyncio.create_task(self._filer(), name="sent-copy-filer")
            self._filers.add(filer)
            filer.add_done_callback(self._filers.discard)

    async def _filer(self) -> None:
        """File queued copies until none is left."""
        loop = asyncio.get_running_loop()
        while self._copy_queue:
            await self._may_file.wait()
            if not self._copy_queue:
                break
            copy = self._copy_queue.popleft()
            self._queued_bytes -= len(copy.prepared.data)
            try:
                if loop.time() < copy.file_by:
                    await sent_copies.file_copy(
                        self.state.db, self.config.imap, copy.outgoing_id, copy.prepared,
                        copy.recorded, self.sent_sessions,
                    )  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("filing a sent copy crashed", outgoing_id=str(copy.outgoing_id))
            finally:
                self.copying.pop(copy.outgoing_id, None)

    async def finish_copies(self, grace: float) -> None:
        """Let the copies queued or in flight finish within ``grace``; cancel the rest (still
        due: filed late by any worker)."""
        if not self._filers:
            return
        self._may_file.set()  # nothing is sent any more: the queue may drain
        _, pending = await asyncio.wait(list(self._filers), timeout=grace)
        self._copy_queue.clear()
        self._queued_bytes = 0
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.copying.clear()

    async def file_late_copy(self, row: outbox.OutgoingRow) -> None:
        late = row.sent_at is None or utcnow() - row.sent_at > COPY_GIVE_UP
        prepared = None if late else await self._prepare(row, when=row.sent_at)
        await sent_copies.file_late_copy(self.state.db, self.config.imap, row, prepared)
