"""What the sending worker decides without doing any I/O: its settings, the retry schedule
(exponential backoff with jitter, then FAILED), what one send needs once read, and the texts
of the outcomes that are not the server's own words."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from mail.endpoint import Endpoint, ProbeSettings
from mail.imap_session import SessionSettings
from mail.session_pool import PoolLimits
from storage import outbox
from storage.models import utcnow
from storage.outbox_runs import SendResult
from storage.rows import InboxRow

# A Sent copy not filed within a day of sending is given up (the mailbox has no Sent folder,
# or its server keeps failing): a late copy that far back would only confuse.
COPY_GIVE_UP = timedelta(days=1)
UNKNOWN_REPLY = (
    "The connection ended after the message was handed to the server and before it answered, "
    "so the server may have accepted it; it is not in the Sent folder. inboxd does not send it "
    "again, to avoid a duplicate."
)
UNKNOWN_HINT = "Ask a recipient whether it arrived; if it did not, send it again."


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    smtp: ProbeSettings
    # The Sent folder: APPEND a copy, or find an interrupted send's (mail.sent_folder).
    imap: SessionSettings
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    max_message_bytes: int = 10 * 1024 * 1024
    # SMTP and Sent-folder IMAP sessions kept per inbox between messages.
    sessions: PoolLimits = field(default_factory=PoolLimits)


def retry_delay(attempt: int, config: OutboxConfig) -> timedelta:
    """Exponential backoff with jitter (half to all of the ceiling)."""
    ceiling = min(config.retry_cap.total_seconds(), config.retry_base.total_seconds() * 2**attempt)
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def retry_or_fail(
    row: outbox.OutgoingRow, config: OutboxConfig, code: int | None, reply: str, hint: str | None
) -> SendResult:
    if row.attempts >= config.max_attempts:
        return SendResult(
            "FAILED",
            code,
            reply,
            hint or f"Gave up after {row.attempts} attempts; send it again later.",
        )
    retry_at = utcnow() + retry_delay(row.attempts - 1, config)
    return SendResult("QUEUED", code, reply, hint, retry_at=retry_at)


@dataclass
class Prepared:
    """What sending one message needs, read at claim time."""

    inbox: InboxRow
    smtp: Endpoint
    imap: Endpoint
    data: bytes
    recipients: list[str]
