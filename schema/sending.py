"""Sending mail in GraphQL: the outbox's messages, sendEmail's input and payloads, and the
errors only sending has."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry import UNSET
from strawberry.scalars import JSON

from resolvers.pagination import encode_cursor
from resolvers.validation_issues import InputInvalid
from schema.errors import NotFound, RateLimited, UserError, ValidationError, user_error
from schema.input_builder import build_inputs_from_plans
from schema.messages import MailAddress
from schema.pagination import PageInfo, page_info
from storage import models
from storage.errors import (
    DailySendLimitError,
    InboxNotActiveError,
    NotCancellableError,
    StorageError,
)
from storage.outbox import OutgoingRow

OutgoingMessageState = strawberry.enum(
    models.OutgoingState,
    description="QUEUED: waiting for its time (sendAt, or a retry's). SENDING: a worker holds "
    "it. SENT: the SMTP server accepted it (lastCode, lastReply). FAILED: refused for good "
    "(a 5xx, or out of retries; see lastHint). CANCELLED: cancelEmail before it was sent.",
)


@strawberry.type(description="How the inbox sends: its settings beside the daily limit.")
class InboxSending:
    copy_to_sent_folder: bool | None = strawberry.field(
        description="File a copy of each sent message in the Sent folder over IMAP. null: "
        "the provider's rule (no copy for Gmail, Microsoft 365 and Outlook.com, which file "
        "sent mail themselves; a copy for every other server)."
    )


@strawberry.input(description="Sending settings; only the fields sent are changed.")
class SendingInput:
    copy_to_sent_folder: bool | None = strawberry.field(
        default=UNSET,
        description="true or false: always or never file a copy; null: the provider's rule.",
    )


@strawberry.type
class OutgoingAttachment:
    filename: str
    content_type: str
    size: int


@strawberry.type(description="A recipient the server refused while it accepted the message.")
class RefusedRecipient:
    address: str
    reply: str


@strawberry.type(description="A message sent (or to be sent) through an inbox's SMTP server.")
class OutgoingMessage:
    id: strawberry.ID
    inbox_id: strawberry.ID
    state: OutgoingMessageState  # type: ignore[valid-type]
    message_id: str = strawberry.field(description="The Message-ID header, made by inboxd.")
    to: list[MailAddress]
    cc: list[MailAddress]
    bcc: list[MailAddress]
    subject: str
    text: str | None
    html: str | None
    headers: JSON
    attachments: list[OutgoingAttachment]
    reply_to_message_id: strawberry.ID | None = strawberry.field(
        description="The received message this one answers."
    )
    in_reply_to: str | None
    references: list[str]
    send_at: datetime | None
    attempts: int = strawberry.field(description="SMTP attempts so far.")
    next_attempt_at: datetime | None = strawberry.field(
        description="QUEUED: when it is due (sendAt, or the next retry)."
    )
    last_code: int | None = strawberry.field(description="The SMTP reply code of the last try.")
    last_reply: str | None = strawberry.field(description="The server's reply text.")
    last_hint: str | None = strawberry.field(description="What to fix, for a failure.")
    refused_recipients: list[RefusedRecipient]
    sent_at: datetime | None
    sent_folder: str | None = strawberry.field(
        description="The IMAP folder a copy was filed in (null: none, e.g. the provider files "
        "sent mail itself)."
    )
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_row(cls, row: OutgoingRow) -> OutgoingMessage:
        def addresses(values: list[dict[str, str | None]]) -> list[MailAddress]:
            return [MailAddress(name=a.get("name"), address=a.get("address") or "") for a in values]

        return cls(
            id=strawberry.ID(str(row.id)),
            inbox_id=strawberry.ID(str(row.inbox_id)),
            state=models.OutgoingState(row.state),
            message_id=row.message_id,
            to=addresses(row.to_addresses),
            cc=addresses(row.cc_addresses),
            bcc=addresses(row.bcc_addresses),
            subject=row.subject,
            text=row.text_body,
            html=row.html_body,
            headers=cast(JSON, row.headers),
            attachments=[
                OutgoingAttachment(
                    filename=a["filename"], content_type=a["content_type"], size=a["size"]
                )
                for a in row.attachments
            ],
            reply_to_message_id=strawberry.ID(str(row.reply_to_message_id))
            if row.reply_to_message_id
            else None,
            in_reply_to=row.in_reply_to,
            references=list(row.reference_ids),
            send_at=row.send_at,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.state == "QUEUED" else None,
            last_code=row.last_code,
            last_reply=row.last_reply,
            last_hint=row.last_hint,
            refused_recipients=[
                RefusedRecipient(address=k, reply=v) for k, v in row.refused.items()
            ],
            sent_at=row.sent_at,
            sent_folder=row.sent_folder,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )


@strawberry.type
class OutgoingMessageEdge:
    cursor: str
    node: OutgoingMessage


@strawberry.type
class OutgoingMessageConnection:
    edges: list[OutgoingMessageEdge]
    page_info: PageInfo


def outgoing_connection(
    rows: list[OutgoingRow], has_next: bool, after: str | None
) -> OutgoingMessageConnection:
    edges = [
        OutgoingMessageEdge(
            cursor=encode_cursor(r.created_at, r.id), node=OutgoingMessage.from_row(r)
        )
        for r in rows
    ]
    return OutgoingMessageConnection(
        edges=edges, page_info=page_info([e.cursor for e in edges], has_next, after)
    )


@strawberry.input
class OutgoingMessageFilter:
    state: OutgoingMessageState | None = None  # type: ignore[valid-type]


@strawberry.input
class AttachmentInput:
    filename: str
    content_type: str = strawberry.field(description='"type/subtype", e.g. application/pdf.')
    content_base64: str = strawberry.field(description="The bytes, base64 (RFC 4648).")


@strawberry.input(description="A message to send through the inbox's SMTP server.")
class SendEmailInput:
    to: list[str] = strawberry.field(
        default_factory=list, description='Addresses, "a@b.example" or "Name <a@b.example>".'
    )
    cc: list[str] = strawberry.field(default_factory=list)
    bcc: list[str] = strawberry.field(
        default_factory=list, description="Envelope recipients only: never in a header."
    )
    subject: str | None = strawberry.field(
        default=None, description="Required, unless replying (then: Re: the original's)."
    )
    text: str | None = None
    html: str | None = strawberry.field(default=None, description="Sanitised before sending.")
    reply_to_message_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A received message of this inbox: the reply threads under it "
        "(In-Reply-To, References) and its subject gets Re:.",
    )
    headers: JSON | None = strawberry.field(
        default=None, description='Extra headers from an allow-list, e.g. {"X-Campaign-Id": "7"}.'
    )
    attachments: list[AttachmentInput] = strawberry.field(default_factory=list)
    send_at: datetime | None = strawberry.field(
        default=None, description="Send at this time (at most 30 days ahead); null: now."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The same key for the same inbox within 24 h returns the first message "
        "instead of queueing another.",
    )


# sendEmail's input, built without Strawberry's per-field work on each request.
build_inputs_from_plans(AttachmentInput, SendEmailInput)


@strawberry.type(description="The inbox cannot send now: see message (verify or switch it on).")
class InboxNotActive(UserError):
    inbox_id: strawberry.ID


@strawberry.type(
    description="The inbox queued its dailySendLimit for the day (a day of its timeZone, else "
    "UTC); resetsAt is that zone's next midnight."
)
class DailySendLimitReached(UserError):
    limit: int
    resets_at: datetime


@strawberry.type(description="Only a QUEUED message can be cancelled.")
class NotCancellable(UserError):
    state: OutgoingMessageState  # type: ignore[valid-type]


@strawberry.type
class SendEmailSuccess:
    outgoing_message: OutgoingMessage


@strawberry.type
class CancelEmailSuccess:
    outgoing_message: OutgoingMessage


SendEmailPayload = Annotated[
    SendEmailSuccess
    | ValidationError
    | NotFound
    | InboxNotActive
    | DailySendLimitReached
    | RateLimited,
    strawberry.union("SendEmailPayload"),
]
CancelEmailPayload = Annotated[
    CancelEmailSuccess | ValidationError | NotFound | NotCancellable,
    strawberry.union("CancelEmailPayload"),
]


def sending_error(exc: StorageError | InputInvalid) -> UserError:
    """The typed error for an exception from ``resolvers.sending``."""
    match exc:
        case InboxNotActiveError():
            return InboxNotActive(
                code="INBOX_NOT_ACTIVE",
                message=f"The inbox cannot send: {exc.reason}.",
                inbox_id=strawberry.ID(str(exc.inbox_id)),
            )
        case DailySendLimitError():
            return DailySendLimitReached(
                code="DAILY_SEND_LIMIT_REACHED",
                message=f"The inbox has queued its {exc.limit} messages for the day; "
                f"more can be sent from {exc.resets_at.isoformat()}.",
                limit=exc.limit,
                resets_at=exc.resets_at,
            )
        case NotCancellableError():
            return NotCancellable(
                code="NOT_CANCELLABLE",
                message=f"The message is {exc.state}: only a QUEUED message can be cancelled.",
                state=models.OutgoingState(exc.state),
            )
    return user_error(exc)
