"""What a round trip (mail.roundtrip) reports: its outcome codes and its JSON-safe result."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RoundTripCode(StrEnum):
    """Codes of the round trip's own outcomes; SMTP/IMAP failures use ProbeCode values."""

    NOT_RECEIVED = "NOT_RECEIVED"
    REJECTED_RECIPIENT = "REJECTED_RECIPIENT"  # RCPT TO refused (field "to")
    REJECTED_SENDER = "REJECTED_SENDER"  # MAIL FROM refused (field "email")
    REJECTED_MESSAGE = "REJECTED_MESSAGE"  # DATA refused (spam filter, policy, size)
    INVALID_ADDRESS = "INVALID_ADDRESS"  # from/to not an address we can send with
    INVALID_HEADER = "INVALID_HEADER"  # headers would not go out as written ("displayName")


@dataclass(slots=True)
class RoundTripResult:
    ok: bool  # sent and (when checked) received
    sent: bool
    received: bool | None  # None when the message went to another address (not checked)
    deleted: bool  # the test message was removed from the mailbox afterwards
    delay_ms: int | None  # from SMTP acceptance to it being found over IMAP
    message_id: str  # the Message-ID we generated (no secret in it)
    code: str  # "OK", a ProbeCode value, or a RoundTripCode value
    message: str
    hint: str | None
    field: str | None  # e.g. "smtp.password", "imap.host", "to"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sent": self.sent,
            "received": self.received,
            "deleted": self.deleted,
            "delay_ms": self.delay_ms,
            "message_id": self.message_id,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "field": self.field,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundTripResult:
        received = data.get("received")
        delay_ms = data.get("delay_ms")
        return cls(
            ok=bool(data["ok"]),
            sent=bool(data.get("sent", False)),
            received=None if received is None else bool(received),
            deleted=bool(data.get("deleted", False)),
            delay_ms=None if delay_ms is None else int(delay_ms),
            message_id=str(data.get("message_id", "")),
            code=str(data["code"]),
            message=str(data.get("message", "")),
            hint=data.get("hint"),
            field=data.get("field"),
        )
