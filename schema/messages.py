"""Received mail in GraphQL: messages, their connection, the receiving settings and status of
an inbox, and the inputs that set them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry import UNSET

from resolvers import messages
from resolvers.pagination import encode_cursor
from schema.context import Info
from schema.pagination import PageInfo, page_info
from storage.attachments import LinkTarget
from storage.messages import MessageFilter as StoredFilter
from storage.messages import MessageRow
from storage.models import ReceivingState as StoredState


@strawberry.enum(description="What the inbox's mailbox watcher is doing.")
class ReceivingState(Enum):
    CONNECTING = "CONNECTING"
    IDLE = "IDLE"
    POLLING = "POLLING"
    BACKOFF = "BACKOFF"
    DISABLED = "DISABLED"


@strawberry.type(description="Why receiving last failed.")
class ReceivingError:
    code: str
    message: str
    hint: str | None


@strawberry.type(description="Receiving mail over IMAP: the inbox's settings and live status.")
class InboxReceiving:
    enabled: bool
    folders: list[str] = strawberry.field(description="IMAP folders watched (default INBOX).")
    backfill_days: int = strawberry.field(
        description="Days of existing mail imported on the first connection (0: none)."
    )
    last_check_at: datetime | None = strawberry.field(description="When the mailbox was last read.")
    _inbox_id: strawberry.Private[uuid.UUID]
    _watched: strawberry.Private[bool]

    async def _status(self, info: Info) -> Any:
        loader = info.context.extra.get("watch_status_loader")
        if loader is None:
            loader = messages.watch_status_loader(info.context.state)
            info.context.extra["watch_status_loader"] = loader
        return await loader.load(self._inbox_id)

    @strawberry.field(description="DISABLED unless the inbox is ACTIVE, on and receiving.")
    async def state(self, info: Info) -> ReceivingState:
        if not self._watched:
            return ReceivingState.DISABLED
        status = await self._status(info)
        return ReceivingState(status.state if status else StoredState.CONNECTING.value)

    @strawberry.field(description="The last failure, until a connection succeeds again.")
    async def last_error(self, info: Info) -> ReceivingError | None:
        status = await self._status(info)
        if status is None or status.error is None:
            return None
        error = status.error
        return ReceivingError(code=error.code, message=error.message, hint=error.hint)

    @strawberry.field(description="Whether the server offers IDLE (null: not connected yet).")
    async def idle_supported(self, info: Info) -> bool | None:
        status = await self._status(info)
        return status.idle_supported if status else None


@strawberry.input(description="Receiving settings; only the fields sent are changed.")
class ReceivingInput:
    enabled: bool | None = UNSET
    folders: list[str] | None = strawberry.field(
        default=UNSET, description="IMAP folders to watch, 1 to 20 (default INBOX)."
    )
    backfill_days: int | None = strawberry.field(
        default=UNSET, description="Import this many days of existing mail first (0 to 90)."
    )


@strawberry.type
class MailAddress:
    name: str | None
    address: str


@strawberry.type
class MessageAttachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    not_stored_reason: str | None = strawberry.field(
        description="Why there is no downloadUrl: the bytes were not kept (over the size limit)."
    )
    _target: strawberry.Private[LinkTarget | None]

    @strawberry.field(
        description="Where the exact bytes can be downloaded, with no API key (the URL is the "
        "capability), until it expires (INBOXD_ATTACHMENT_URL_SECONDS, 300): a path on this "
        "server, /attachments/...; null when the bytes were not kept (see notStoredReason)."
    )
    def download_url(self, info: Info) -> str | None:
        links = info.context.state.attachment_links
        if self._target is None or links is None:
            return None
        return links.url(self._target)


def _attachments(row: MessageRow) -> list[MessageAttachment]:
    found = []
    for index, a in enumerate(row.attachments):
        stored = a.get("stored", False)
        found.append(
            MessageAttachment(
                filename=a.get("filename"),
                content_type=a.get("content_type") or "application/octet-stream",
                size=int(a.get("size") or 0),
                content_id=a.get("content_id"),
                not_stored_reason=None
                if stored
                else a.get("not_stored_reason", "Received before inboxd kept attachment bytes."),
                _target=LinkTarget(row.workspace_id, row.id, index) if stored else None,
            )
        )
    return found


def _address(value: dict[str, Any]) -> MailAddress:
    return MailAddress(name=value.get("name"), address=value.get("address") or "")


@strawberry.type(
    description="A received message. Receiving never changes its flags on the server; "
    "setMessageFlags and deleteMessage do, when asked."
)
class Message:
    id: strawberry.ID
    inbox_id: strawberry.ID
    folder: str
    uid: int
    message_id: str | None = strawberry.field(description="The Message-ID header.")
    thread_id: strawberry.ID = strawberry.field(
        description="The conversation: shared with the inbox's message this one answers "
        "(In-Reply-To, References), else its own."
    )
    in_reply_to: str | None
    references: list[str]
    subject: str | None
    from_: MailAddress | None = strawberry.field(name="from")
    to: list[MailAddress]
    cc: list[MailAddress]
    reply_to: list[MailAddress]
    sent_at: datetime | None = strawberry.field(description="The Date header.")
    received_at: datetime
    text_body: str | None
    html_body: str | None = strawberry.field(description="HTML, sanitised.")
    attachments: list[MessageAttachment]
    size: int
    parse_error: str | None = strawberry.field(
        description="Why the message could not be (fully) parsed; it is stored as read."
    )
    seen: bool = strawberry.field(
        description="\\Seen: as the server had it when the message was received, then as set "
        "by setMessageFlags."
    )
    flagged: bool = strawberry.field(description="\\Flagged, likewise.")

    @classmethod
    def from_row(cls, row: MessageRow) -> Message:
        return cls(
            id=strawberry.ID(str(row.id)),
            inbox_id=strawberry.ID(str(row.inbox_id)),
            folder=row.folder,
            uid=row.uid,
            message_id=row.message_id,
            thread_id=strawberry.ID(str(row.thread_id)),
            in_reply_to=row.in_reply_to,
            references=list(row.reference_ids),
            subject=row.subject,
            from_=_address(row.from_address) if row.from_address else None,
            to=[_address(a) for a in row.to_addresses],
            cc=[_address(a) for a in row.cc_addresses],
            reply_to=[_address(a) for a in row.reply_to_addresses],
            sent_at=row.sent_at,
            received_at=row.received_at,
            text_body=row.text_body,
            html_body=row.html_body,
            attachments=_attachments(row),
            size=row.size,
            parse_error=row.parse_error,
            seen=row.seen,
            flagged=row.flagged,
        )


@strawberry.type
class MessageEdge:
    cursor: str
    node: Message


@strawberry.type
class MessageConnection:
    edges: list[MessageEdge]
    page_info: PageInfo


def message_connection(
    rows: list[MessageRow], has_next: bool, after: str | None
) -> MessageConnection:
    edges = [
        MessageEdge(cursor=encode_cursor(r.received_at, r.id), node=Message.from_row(r))
        for r in rows
    ]
    return MessageConnection(
        edges=edges, page_info=page_info([e.cursor for e in edges], has_next, after)
    )


@strawberry.input
class MessageFilter:
    folder: str | None = None
    from_: str | None = strawberry.field(
        default=None, name="from", description="Substring of the sender's address."
    )
    subject: str | None = strawberry.field(default=None, description="Substring of the subject.")
    since: datetime | None = strawberry.field(default=None, description="Received at or after.")
    until: datetime | None = strawberry.field(default=None, description="Received before.")
    search: str | None = strawberry.field(
        default=None, description="Substring of the subject, text body or sender."
    )
    unseen: bool | None = strawberry.field(
        default=None, description="true: only messages not seen (false or null: all)."
    )
    thread_id: strawberry.ID | None = strawberry.field(
        default=None, description="Messages of this conversation (Message.threadId)."
    )

    def stored(self) -> StoredFilter:
        return StoredFilter(
            folder=self.folder,
            sender=self.from_,
            subject=self.subject,
            since=self.since,
            until=self.until,
            search=self.search,
            unseen=self.unseen,
            thread_id=_thread(self.thread_id),
        )


def _thread(raw: strawberry.ID | None) -> uuid.UUID | None:
    """The thread asked for; an id that is no thread's matches no message."""
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return uuid.UUID(int=0)
