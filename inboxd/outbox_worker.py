"""The sending worker: claims due outbox messages, sends each through its inbox's SMTP server
and records what the server said.

A message is claimed (``FOR UPDATE SKIP LOCKED``) and held under a lease renewed while it is
sent. SENT is recorded the moment the server accepts the message, then a copy is filed in the
Sent folder (unless the provider files sent mail itself, or the inbox's
``sending.copyToSentFolder`` says otherwise), queued for a filer: the sending slot is free
at SENT and no send waits for a copy; at most ``concurrency`` copies are filed at once, and
the queue is bounded (a copy past it, or one that waited half the lease, is filed late).
While a claim fills every slot (a burst), copies wait: sending goes first.
A message found SENDING under an expired lease (its worker died, perhaps after the server
accepted it) is first looked for in the Sent folder by its Message-ID: found, it is SENT
without sending it again; when the folder cannot be read, it is retried later.

A SENT message whose worker died before filing its copy has ``copy_due_at`` come due: any
worker then files it (appended unless the folder holds its Message-ID already).

No duplicate when a worker dies mid-send: a write-ahead mark (``data_started_at``) is
committed inside SMTP DATA, after the message and before its last line (``mail.smtp_data``:
until that line the server holds an unfinished DATA, which a lost connection discards). A
message without it was never handed over and is sent again; one with it (the worker died,
or the connection dropped before the server's reply) may be on the server already: it is
SENT if found in the Sent folder, otherwise FAILED with a reply that says so (RFC 1047's
window: inboxd chooses no duplicate over a possible resend).

A 5xx is FAILED with the code, reply and a hint; a 4xx, a timeout or a lost connection
before the mark is retried with jittered backoff up to ``max_attempts``.

Sessions are kept per inbox between messages (``mail.smtp_pool``, ``mail.sent_folder``):
after the server accepted a message, the logged-in SMTP session serves the inbox's next one
for ``INBOXD_SEND_SESSION_LINGER_SECONDS`` (up to ``INBOXD_SEND_SESSION_MAX_MESSAGES``), and
so does the IMAP session that files Sent copies. This changes nothing above: each message
still commits its own mark before its own DATA, a kept session found dead is replaced only
before that mark, and a session is never kept after a failure or an unknown outcome.
``stop`` QUITs and LOGOUTs the kept sessions. What happens to one claimed message is
``inboxd.outbox_send``'s.

Between claims the worker sleeps until the earliest message comes due (sendAt, a retry, an
expired lease), woken early by NOTIFY when a message is queued or rescheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

import structlog

from inboxd.claim_loop import ClaimLoop
from inboxd.outbox_rules import OutboxConfig, retry_or_fail
from inboxd.outbox_send import MessageSender
from storage import outbox, outbox_runs
from storage.db import UNAVAILABLE_ERRORS, Connection
from storage.outbox_runs import ClaimedOutgoing

log = structlog.get_logger("inboxd.outbox")


@dataclass
class OutboxWorker(ClaimLoop):
    config: OutboxConfig
    lease: timedelta = field(default=timedelta(seconds=120), kw_only=True)
    # Messages whose SMTP transaction has begun: never released, their lease runs out instead
    # (the successor looks in the Sent folder first).
    transmitting: set[uuid.UUID] = field(default_factory=set)
    sender: MessageSender = field(init=False)

    kind: ClassVar[str] = "outbox"

    def __post_init__(self) -> None:
        self.sender = MessageSender(
            self.state,
            self.config,
            self.worker_id,
            self.lease,
            self.transmitting,
            copy_concurrency=self.concurrency,
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let sends and Sent copies finish within ``grace``, give back the
        sends not begun (a copy not filed stays due), then end the kept SMTP and IMAP
        sessions (QUIT, LOGOUT)."""
        await self._stop_claiming()
        deadline = asyncio.get_running_loop().time() + grace
        try:
            await self._give_back(await self._finish_running(grace))
            await self.sender.finish_copies(max(0.0, deadline - asyncio.get_running_loop().time()))
        finally:
            await self.sender.close()

    async def _give_back(self, unfinished: list[uuid.UUID]) -> None:
        """Sends whose transaction had begun keep their lease (the successor looks in the
        Sent folder); the others are released at once."""
        for outgoing_id in unfinished:
            if outgoing_id in self.transmitting:
                continue
            try:
                async with self.state.db.connection(background=True) as connection:
                    await outbox_runs.release(connection, outgoing_id, self.worker_id)
            except UNAVAILABLE_ERRORS:
                pass  # its lease expires and another worker takes it

    async def _extend_lease(self, connection: Connection, item: uuid.UUID) -> bool:
        return await outbox_runs.extend_lease(connection, item, self.worker_id, self.lease)

    async def _claim(self) -> float:
        """Claim what is due; return how long to sleep before looking again (0: at once)."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return self.poll_interval  # a finished send wakes the loop
        async with self.state.db.connection(background=True) as connection:
            claimed = await outbox_runs.claim_outgoing(
                connection, worker_id=self.worker_id, lease=self.lease, limit=free
            )
            # Every slot taken and perhaps more due: Sent copies wait (sending goes first).
            self.sender.file_copies(len(claimed) < free)
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
        return self._sleep(full=len(claimed) + len(copies) == free, due_in=due_in)

    async def _run(self, claimed: ClaimedOutgoing) -> None:
        row = claimed.row
        heartbeat = asyncio.create_task(self._heartbeat(row.id))
        try:
            await self.sender.send(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending crashed", outgoing_id=str(row.id))
            if row.id in self.transmitting:
                return  # it may have been accepted: its lease runs out, the Sent folder decides
            with contextlib.suppress(Exception):
                result = retry_or_fail(row, self.config, None, "inboxd failed to send it.", None)
                await self.sender.record(row.id, result)
        finally:
            heartbeat.cancel()
            self.running.pop(row.id, None)
            self.transmitting.discard(row.id)
            self._slot_freed()

    async def _run_copy(self, row: outbox.OutgoingRow) -> None:
        try:
            await self.sender.file_late_copy(row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("filing a sent copy crashed", outgoing_id=str(row.id))
        finally:
            self.running.pop(row.id, None)
            self._slot_freed()
