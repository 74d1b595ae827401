"""The sending worker: claims due outbox messages, sends each through its inbox's SMTP server
and records what the server said.

A message is claimed (``FOR UPDATE SKIP LOCKED``) and held under a lease renewed while it is
sent. SENT is recorded the moment the server accepts the message, then a copy is filed in the
Sent folder (unless the provider files sent mail itself, or the inbox's
``sending.copyToSentFolder`` says otherwise). A message found SENDING under an expired lease
(its worker died, perhaps after the server accepted it) is first looked for in the Sent
folder by its Message-ID: found, it is SENT without sending it again; when the folder
cannot be read, it is retried later.

A SENT message whose worker died before filing its copy has ``copy_due_at`` come due: any
worker then files it (appended unless the folder holds its Message-ID already).

No duplicate when a worker dies mid-send: a write-ahead mark (``data_started_at``) is
committed before SMTP DATA begins. A message without it was never handed over and is sent
again; one with it (the worker died, or the connection dropped before the server's reply)
may be on the server already: it is SENT if found in the Sent folder, otherwise FAILED with
a reply that says so (RFC 1047's window: inboxd chooses no duplicate over a possible resend).

A 5xx is FAILED with the code, reply and a hint; a 4xx, a timeout or a lost connection
before DATA is retried with jittered backoff up to ``max_attempts``.

Between claims the worker sleeps until the earliest message comes due (sendAt, a retry, an
expired lease), woken early by NOTIFY when a message is queued or rescheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
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
from mail.sent_folder import find_in_sent
from resolvers.logins import Logins, ReauthRequired, TokenUnavailable, is_oauth
from resolvers.outgoing_mail import copies_to_sent_folder, outgoing_from_row
from resolvers.state import AppState
from storage import inbox_reads, outbox, outbox_runs
from storage.db import UNAVAILABLE_ERRORS
from storage.listener import EventHub
from storage.models import utcnow
from storage.outbox_runs import ClaimedOutgoing, SendResult
from storage.secrets import DecryptionError, Secret

log = structlog.get_logger("inboxd.outbox")

DUE_SLACK = 0.005
MIN_SLEEP = 0.05


@dataclass
class OutboxWorker:
    state: AppState
    hub: EventHub
    config: OutboxConfig
    concurrency: int = 8
    lease: timedelta = timedelta(seconds=120)
    poll_interval: float = 15.0
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    running: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    # Messages whose SMTP transaction has begun: never released, their lease runs out instead
    # (the successor looks in the Sent folder first).
    transmitting: set[uuid.UUID] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _waker: asyncio.Event | None = None

    async def start(self) -> None:
        self._waker = self.hub.job_waker()
        self._task = asyncio.create_task(self._loop(), name=f"outbox-{self.worker_id}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let sends finish within ``grace``, give back those not begun."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.running:
            return
        _, pending = await asyncio.wait(list(self.running.values()), timeout=grace)
        unfinished = [i for i, task in self.running.items() if task in pending]
        not_begun = [i for i in unfinished if i not in self.transmitting]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for outgoing_id in not_begun:
            try:
                async with self.state.db.connection(background=True) as connection:
                    await outbox_runs.release(connection, outgoing_id, self.worker_id)
            except UNAVAILABLE_ERRORS:
                pass  # its lease expires and another worker takes it

    async def _loop(self) -> None:
        assert self._waker is not None
        backoff = 0.5
        while not self._stopping:
            self._waker.clear()
            try:
                sleep = await self._claim()
                backoff = 0.5
            except UNAVAILABLE_ERRORS as exc:
                log.warning("outbox claim failed; database unavailable?", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if sleep <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waker.wait(), sleep)

    async def _claim(self) -> float:
        """Claim what is due; return how long to sleep before looking again (0: at once)."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return self.poll_interval  # a finished send wakes the loop
        async with self.state.db.connection(background=True) as connection:
            claimed = await outbox_runs.claim_outgoing(
                connection, worker_id=self.worker_id, lease=self.lease, limit=free
            )
            for item in claimed:
                task = asyncio.create_task(self._run(item), name=f"send-{item.row.id}")
                self.running[item.row.id] = task
            copies: list[outbox.OutgoingRow] = []
            if len(claimed) < free:
                copies = await outbox_runs.claim_copies(
                    connection, hold=self.lease, limit=free - len(claimed)
                )
            for row in copies:
                if row.id not in self.running:
                    task = asyncio.create_task(self._run_copy(row), name=f"copy-{row.id}")
                    self.running[row.id] = task
            due_in = None
            if len(claimed) + len(copies) < free:
                due_in = await outbox_runs.next_due(connection)
        if len(claimed) + len(copies) == free:
            return 0
        if due_in is None:
            return self.poll_interval
        if due_in <= 0:
            return MIN_SLEEP  # due, but another worker holds it or is committing its claim
        return min(due_in + DUE_SLACK, self.poll_interval)

    async def _run(self, claimed: ClaimedOutgoing) -> None:
        row = claimed.row
        heartbeat = asyncio.create_task(self._heartbeat(row.id))
        try:
            await self._send(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending crashed", outgoing_id=str(row.id))
            if row.id in self.transmitting:
                return  # it may have been accepted: its lease runs out, the Sent folder decides
            with contextlib.suppress(Exception):
                result = retry_or_fail(row, self.config, None, "inboxd failed to send it.", None)
                await self._record(row.id, result)
        finally:
            heartbeat.cancel()
            self.running.pop(row.id, None)
            self.transmitting.discard(row.id)
            if self._waker is not None and not self._stopping:
                self._waker.set()  # a slot is free

    async def _record(
        self, outgoing_id: uuid.UUID, result: SendResult
    ) -> outbox.OutgoingRow | None:
        async with self.state.db.connection(background=True) as connection:
            return await outbox_runs.record_result(connection, outgoing_id, self.worker_id, result)

    async def _prepare(
        self, row: outbox.OutgoingRow, when: datetime | None = None
    ) -> Prepared | SendResult | None:
        async with self.state.db.connection(background=True) as connection:
            inbox = await inbox_reads.read_inbox(connection, row.workspace_id, row.inbox_id)
            contents = await outbox.read_attachment_contents(connection, row.id)
        if inbox is None:
            return None  # deleted: its outbox goes with it
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

    async def _send(self, claimed: ClaimedOutgoing) -> None:
        row = claimed.row
        prepared = await self._prepare(row)
        if prepared is None:
            return
        if isinstance(prepared, SendResult):
            await self._record(row.id, prepared)
            return
        if row.data_started_at is not None:
            await self._settle_unknown(row, prepared)
            return
        if claimed.recovering:
            found = await find_in_sent(prepared.imap, self.config.imap, row.message_id)
            if found is None:
                await self._record(
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
                await self._record(row.id, SendResult("SENT", None, reply))
                return
        self.transmitting.add(row.id)
        outcome = await self._transmit(row.id, prepared)
        if outcome.login_code is ProbeCode.TOKEN_REJECTED and is_oauth(prepared.inbox):
            # Refused at login, before MAIL FROM: nothing was sent. One refresh, one retry.
            refused = await self._token_refused_again(prepared)
            if refused is not None:
                await self._record(row.id, refused)
                return
            outcome = await self._transmit(row.id, prepared)
        if outcome.accepted:
            await self._sent(row, prepared, outcome.code, outcome.reply, outcome.refused)
        elif outcome.unknown:
            # The server may have it: the next attempt only looks for it (_settle_unknown),
            # after the backoff, which gives a provider that files sent mail itself time to.
            result = retry_or_fail(row, self.config, None, outcome.reply, None)
            await self._record(row.id, dataclasses.replace(result, keep_data_mark=True))
        elif outcome.withheld:
            # Not marked (the database away, or the lease lost): nothing was sent.
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                result = retry_or_fail(row, self.config, None, outcome.reply, None)
                await self._record(row.id, dataclasses.replace(result, uncounted=True))
        elif outcome.permanent:
            result = SendResult("FAILED", outcome.code, outcome.reply, outcome.hint)
            await self._record(row.id, result)
        else:
            await self._record(
                row.id, retry_or_fail(row, self.config, outcome.code, outcome.reply, outcome.hint)
            )

    async def _settle_unknown(self, row: outbox.OutgoingRow, prepared: Prepared) -> None:
        """An earlier attempt began DATA and never heard the server's answer (its worker died,
        or the connection dropped): the server may have the message. Found in the Sent folder
        it is SENT; otherwise it is FAILED with that said, never sent a second time."""
        found = await find_in_sent(prepared.imap, self.config.imap, row.message_id)
        if found:
            reply = "Found in the Sent folder after an interrupted send; not sent again."
            await self._record(row.id, SendResult("SENT", None, reply))
        elif found is None:
            result = retry_or_fail(
                row,
                self.config,
                None,
                "An interrupted send could not be checked: the Sent folder could not be read.",
                "Check the Sent folder; if it is not there, send it again.",
            )
            await self._record(
                row.id, dataclasses.replace(result, uncounted=True, keep_data_mark=True)
            )
        else:
            await self._record(row.id, SendResult("FAILED", None, UNKNOWN_REPLY, UNKNOWN_HINT))

    async def _transmit(self, outgoing_id: uuid.UUID, prepared: Prepared) -> SendOutcome:
        async def mark() -> bool:
            """The write-ahead mark, committed before DATA (see the module docstring)."""
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
            recorded = await self._record(row.id, result) is not None
        finally:
            # Unrecorded (the database away), the Sent copy is what keeps a successor from
            # sending it again: filed either way.
            if wants_copy:
                await sent_copies.file_copy(
                    self.state.db, self.config.imap, row.id, prepared, recorded
                )

    async def _file_late_copy(self, row: outbox.OutgoingRow) -> None:
        late = row.sent_at is None or utcnow() - row.sent_at > COPY_GIVE_UP
        prepared = None if late else await self._prepare(row, when=row.sent_at)
        await sent_copies.file_late_copy(self.state.db, self.config.imap, row, prepared)

    async def _run_copy(self, row: outbox.OutgoingRow) -> None:
        try:
            await self._file_late_copy(row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("filing a sent copy crashed", outgoing_id=str(row.id))
        finally:
            self.running.pop(row.id, None)
            if self._waker is not None and not self._stopping:
                self._waker.set()

    async def _heartbeat(self, outgoing_id: uuid.UUID) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.state.db.connection(background=True) as connection:
                    held = await outbox_runs.extend_lease(
                        connection, outgoing_id, self.worker_id, self.lease
                    )
            except UNAVAILABLE_ERRORS:
                continue
            if not held:
                return
