"""The tables of mail: received messages, their attachments' bytes, the changes queued for
the IMAP server and the messages deleted in inboxd; and the outbox (messages to send, their
attachments' bytes, the daily send counts). Part of ``storage.models`` (the same metadata,
re-exported there), which remains the one description of the tables."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from storage.models import _false, _now, _ts


class Message(SQLModel, table=True):
    """A received message, parsed. Stored once per (inbox, folder, uidvalidity, uid) and once
    per Message-ID within the inbox; ``parse_error`` set means it could not be parsed (it is
    kept, so it is never fetched again)."""

    __tablename__ = "message"
    __table_args__ = (
        Index("uq_message_mailbox_uid", "inbox_id", "folder", "uidvalidity", "uid", unique=True),
        Index(
            "uq_message_inbox_message_id",
            "inbox_id",
            "message_id",
            unique=True,
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        Index("ix_message_inbox_received", "inbox_id", "received_at", "id"),
        Index("ix_message_workspace_received", "workspace_id", "received_at", "id"),
        Index("ix_message_inbox_thread", "inbox_id", "thread_id", "received_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE")
    folder: str = Field(sa_column=Column(Text, nullable=False))
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: str | None = Field(default=None, sa_column=Column(Text))
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    reference_ids: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False)
    )
    subject: str | None = Field(default=None, sa_column=Column(Text))
    from_address: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    to_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    cc_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    reply_to_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    sent_at: datetime | None = _ts()
    text_body: str | None = Field(default=None, sa_column=Column(Text))
    html_body: str | None = Field(default=None, sa_column=Column(Text))
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    size: int = Field(default=0, nullable=False)
    parse_error: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = _now()
    # As the server reported them when the message was stored, then as set through inboxd.
    seen: bool = Field(default=False, sa_column=_false())
    flagged: bool = Field(default=False, sa_column=_false())
    # The conversation: the thread of the message it answers (In-Reply-To, References), else
    # its own id (storage.messages).
    thread_id: uuid.UUID = Field(nullable=False)


class MessageAction(SQLModel, table=True):
    """A change made in inboxd for the IMAP server (FLAGS or DELETE; see
    storage.message_actions), by (folder, uidvalidity, uid): the message row may be gone."""

    __tablename__ = "message_action"
    __table_args__ = (Index("ix_message_action_inbox", "inbox_id", "id"),)

    id: int = Field(sa_column=Column(BigInteger, Identity(), primary_key=True))
    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE")
    message_id: uuid.UUID | None = Field(default=None)
    folder: str = Field(sa_column=Column(Text, nullable=False))
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    seen: bool | None = Field(default=None)
    flagged: bool | None = Field(default=None)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    next_attempt_at: datetime = _now()
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _now()


class DeletedMessage(SQLModel, table=True):
    """A message deleted in inboxd: never imported again (by UID or by Message-ID)."""

    __tablename__ = "deleted_message"
    __table_args__ = (
        Index(
            "ix_deleted_message_message_id",
            "inbox_id",
            "message_id",
            postgresql_where=text("message_id IS NOT NULL"),
        ),
    )

    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE", primary_key=True)
    folder: str = Field(sa_column=Column(Text, primary_key=True))
    uidvalidity: int = Field(sa_column=Column(BigInteger, primary_key=True))
    uid: int = Field(sa_column=Column(BigInteger, primary_key=True))
    message_id: str | None = Field(default=None, sa_column=Column(Text))
    deleted_at: datetime = _now()


class MessageAttachment(SQLModel, table=True):
    """The exact decoded bytes of a message's attachment ``index`` (0-based, the order of
    ``message.attachments``, which describes it); absent when it was over the size limit."""

    __tablename__ = "message_attachment"

    message_id: uuid.UUID = Field(foreign_key="message.id", ondelete="CASCADE", primary_key=True)
    index: int = Field(sa_column=Column(Integer, primary_key=True))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ReceiverMember(SQLModel, table=True):
    """A process that receives mail, while ``expires_at`` is ahead (renewed with its leases).
    Inboxes are shared out evenly among the live members (storage.watch_leases.share)."""

    __tablename__ = "receiver_member"

    owner: str = Field(sa_column=Column(Text, primary_key=True))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class OutgoingState(StrEnum):
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL_OUTGOING_STATES = frozenset({"SENT", "FAILED", "CANCELLED"})


class OutgoingMessage(SQLModel, table=True):
    """One message to send, and the durable job that sends it.

    QUEUED rows come due at ``next_attempt_at`` (``send_at``, or a retry's time); a worker
    holds a SENDING row through ``lease_owner``/``lease_expires_at``. ``message_id`` is made at
    enqueue time, so a successor that finds an expired SENDING lease can look for the message
    in the Sent folder before sending it again."""

    __tablename__ = "outgoing_message"
    __table_args__ = (
        # The same key within 24 h returns the first message (older keys are released).
        Index(
            "uq_outgoing_message_idempotency",
            "inbox_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_outgoing_message_inbox_created", "inbox_id", "created_at", "id"),
        # The workers' claim and their "when is the next one due".
        Index(
            "ix_outgoing_message_due",
            "next_attempt_at",
            postgresql_where=text("state = 'QUEUED'"),
        ),
        Index(
            "ix_outgoing_message_lease",
            "lease_expires_at",
            postgresql_where=text("state = 'SENDING'"),
        ),
        Index(
            "ix_outgoing_message_copy_due",
            "copy_due_at",
            postgresql_where=text("copy_due_at IS NOT NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE")
    state: str = Field(default=OutgoingState.QUEUED.value, sa_column=Column(Text, nullable=False))
    # [{"name": str | None, "address": str}]
    to_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    cc_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    bcc_addresses: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    subject: str = Field(sa_column=Column(Text, nullable=False))
    text_body: str | None = Field(default=None, sa_column=Column(Text))
    html_body: str | None = Field(default=None, sa_column=Column(Text))
    headers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    # [{"filename", "content_type", "size"}]; the bytes are in outgoing_attachment.
    attachments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False)
    )
    reply_to_message_id: uuid.UUID | None = Field(default=None)
    in_reply_to: str | None = Field(default=None, sa_column=Column(Text))
    reference_ids: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False)
    )
    message_id: str = Field(sa_column=Column(Text, nullable=False))
    idempotency_key: str | None = Field(default=None, sa_column=Column(Text))
    send_at: datetime | None = _ts()
    # The UTC day this message counts against the inbox's daily limit (send_count).
    count_day: date = Field(sa_column=Column(Date, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime = _now()
    lease_owner: str | None = Field(default=None, sa_column=Column(Text))
    lease_expires_at: datetime | None = _ts()
    last_code: int | None = Field(default=None)
    last_reply: str | None = Field(default=None, sa_column=Column(Text))
    last_hint: str | None = Field(default=None, sa_column=Column(Text))
    # {recipient: reply} for recipients refused while the server accepted the message.
    refused: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    sent_folder: str | None = Field(default=None, sa_column=Column(Text))
    sent_at: datetime | None = _ts()
    created_at: datetime = _now()
    updated_at: datetime = _now()
    version: int = Field(default=1, nullable=False)
    # Write-ahead mark: set inside SMTP DATA, before the message's last line; cleared when an
    # attempt ends with the server's reply. Set on a message whose worker died (or whose
    # connection dropped before the reply), it means the server may have it: it is looked
    # for, never sent again.
    data_started_at: datetime | None = _ts()
    # SENT, its Sent-folder copy not filed yet: when any worker should file it (its sender
    # files it at once and clears this; one that died leaves it to come due).
    copy_due_at: datetime | None = _ts()


class OutgoingAttachment(SQLModel, table=True):
    """The bytes of an outgoing message's attachment ``index`` (the order of
    ``outgoing_message.attachments``)."""

    __tablename__ = "outgoing_attachment"

    outgoing_id: uuid.UUID = Field(
        foreign_key="outgoing_message.id", ondelete="CASCADE", primary_key=True
    )
    index: int = Field(sa_column=Column(Integer, primary_key=True))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SendCount(SQLModel, table=True):
    """Messages queued by an inbox for one UTC day: the daily limit's counter, raised with
    ``INSERT .. ON CONFLICT DO UPDATE .. WHERE count < limit`` so that concurrent sends in any
    number of processes queue at most the limit."""

    __tablename__ = "send_count"

    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE", primary_key=True)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
