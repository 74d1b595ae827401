"""Tables. One ``table=True`` model per table; columns mirror the GraphQL contract in snake_case.

Enumerations are stored as short text, not Postgres enum types, so adding a value is a code
change and never a blocking ``ALTER TYPE`` migration.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _now() -> Any:
    """A required timestamp, now by default."""
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False))


def _false() -> Any:
    return Column(Boolean, nullable=False, server_default=text("false"))


def _ts(nullable: bool = True) -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=nullable),
    )


class InboxStatus(StrEnum):
    PENDING = "PENDING"
    VERIFYING = "VERIFYING"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"


class DeleteMessagePolicy(StrEnum):
    DONT_DELETE = "DONT_DELETE"
    DELETE_ON_RECEIVE = "DELETE_ON_RECEIVE"
    DELETE_WHEN_DELETED = "DELETE_WHEN_DELETED"


class AuthMethod(StrEnum):
    """How inboxd logs in to an inbox's servers: its password, or an OAuth 2.0 access token
    (XOAUTH2)."""

    PASSWORD = "PASSWORD"
    OAUTH2 = "OAUTH2"


class OAuthProvider(StrEnum):
    GOOGLE = "GOOGLE"
    MICROSOFT = "MICROSOFT"


class Permission(StrEnum):
    MANAGE_EMAIL_INBOX = "manage-email-inbox"
    VIEW_EMAIL_INBOX = "view-email-inbox"


class TestState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


OPEN_TEST_STATES = (TestState.QUEUED.value, TestState.RUNNING.value)


class Workspace(SQLModel, table=True):
    __tablename__ = "workspace"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    max_inboxes: int = Field(default=10, nullable=False)
    subscription_active: bool = Field(default=True, nullable=False)
    created_at: datetime = _now()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE", index=True)
    name: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    # The visible part of the key (``inbx_<prefix>_...``): identifies it in logs and the audit.
    prefix: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    permissions: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False)
    )
    created_at: datetime = _now()
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class EmailInbox(SQLModel, table=True):
    __tablename__ = "email_inbox"
    __table_args__ = (
        Index("uq_email_inbox_workspace_email", "workspace_id", "email", unique=True),
        Index("ix_email_inbox_workspace_created", "workspace_id", "created_at", "id"),
        # Verification spacing looks up every inbox that logs in as the same account.
        Index("ix_email_inbox_smtp_account", "smtp_host", "smtp_username"),
        Index("ix_email_inbox_imap_account", "imap_host", "imap_username"),
        # When the next externally managed OAuth token runs out (storage.inbox_tokens).
        Index(
            "ix_email_inbox_external_token_expiry",
            "oauth_access_token_expires_at",
            postgresql_where=text(
                "auth_method = 'OAUTH2' AND NOT oauth_managed AND status <> 'FAILED'"
            ),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    name: str = Field(sa_column=Column(Text, nullable=False))
    email: str = Field(sa_column=Column(Text, nullable=False))
    display_name: str = Field(sa_column=Column(Text, nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))
    sender_info: str | None = Field(default=None, sa_column=Column(Text))
    department: str | None = Field(default=None, sa_column=Column(Text))
    active: bool = Field(default=True, nullable=False)
    provider: str = Field(default="CUSTOM", sa_column=Column(Text, nullable=False))
    status: str = Field(default=InboxStatus.PENDING.value, sa_column=Column(Text, nullable=False))
    status_reason: str | None = Field(default=None, sa_column=Column(Text))

    smtp_host: str = Field(sa_column=Column(Text, nullable=False))
    smtp_port: int = Field(nullable=False)
    smtp_security: str = Field(sa_column=Column(Text, nullable=False))
    smtp_username: str = Field(sa_column=Column(Text, nullable=False))
    smtp_password: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    smtp_tls_certificate_sha256: str | None = Field(default=None, sa_column=Column(Text))

    imap_host: str = Field(sa_column=Column(Text, nullable=False))
    imap_port: int = Field(nullable=False)
    imap_security: str = Field(sa_column=Column(Text, nullable=False))
    imap_username: str = Field(sa_column=Column(Text, nullable=False))
    imap_password: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    imap_tls_certificate_sha256: str | None = Field(default=None, sa_column=Column(Text))

    daily_send_limit: int = Field(default=15, nullable=False)
    sending_enabled: bool = Field(default=True, nullable=False)
    signature: str | None = Field(default=None, sa_column=Column(Text))
    tags: list[str] = Field(default_factory=list, sa_column=Column(ARRAY(Text), nullable=False))
    reply_to: str | None = Field(default=None, sa_column=Column(Text))
    delete_message_policy: str = Field(
        default=DeleteMessagePolicy.DONT_DELETE.value, sa_column=Column(Text, nullable=False)
    )
    notify_on_new_messages: bool = Field(default=False, nullable=False)
    notification_email: str | None = Field(default=None, sa_column=Column(Text))
    receiving_enabled: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true"))
    )
    receiving_folders: list[str] = Field(
        default_factory=lambda: ["INBOX"],
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{INBOX}'")),
    )
    # Days of existing mail imported on the first connection; 0: only mail arriving from then.
    receiving_backfill_days: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    # A copy of sent mail in the Sent folder: None follows the provider (none for those that
    # file sent mail themselves), True or False is the user's choice.
    sending_copy_to_sent_folder: bool | None = Field(
        default=None, sa_column=Column(Boolean, nullable=True)
    )
    # An IANA name; the daily send limit counts this zone's days. None: UTC.
    time_zone: str | None = Field(default=None, sa_column=Column(Text))
    dkim_selectors: list[str] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'")),
    )
    setup_status: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    last_verified_at: datetime | None = _ts()
    last_check_at: datetime | None = _ts()
    error_count: int = Field(default=0, nullable=False)
    last_message_id: str | None = Field(default=None, sa_column=Column(Text))
    # OAuth 2.0 (AuthMethod.OAUTH2): the tokens are encrypted like the passwords, bound to
    # their row and column. Managed tokens come from startOAuthConnection and are refreshed;
    # external ones (createEmailInbox's oauth2 input) are used until they expire.
    auth_method: str = Field(
        default=AuthMethod.PASSWORD.value,
        sa_column=Column(Text, nullable=False, server_default=text("'PASSWORD'")),
    )
    oauth_provider: str | None = Field(default=None, sa_column=Column(Text))
    oauth_managed: bool = Field(default=False, sa_column=_false())
    oauth_refresh_token: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    oauth_access_token: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    oauth_access_token_expires_at: datetime | None = _ts()
    # Set when the provider refused the refresh token or an external token expired: the
    # account must be connected again (startOAuthConnection with the inbox's id).
    oauth_reauth_required_at: datetime | None = _ts()
    created_at: datetime = _now()
    updated_at: datetime = _now()
    version: int = Field(default=1, nullable=False)


class ConnectionTest(SQLModel, table=True):
    """One verification of an inbox, and the durable job that performs it."""

    __tablename__ = "connection_test"
    __table_args__ = (
        # At most one open test per inbox: the second request gets the first one back.
        Index(
            "uq_connection_test_open_per_inbox",
            "inbox_id",
            unique=True,
            postgresql_where=text("state IN ('QUEUED', 'RUNNING')"),
        ),
        Index("ix_connection_test_inbox_created", "inbox_id", "created_at"),
        Index(
            "ix_connection_test_runnable",
            "run_after",
            postgresql_where=text("state IN ('QUEUED', 'RUNNING')"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE")
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE", index=True)
    state: str = Field(default=TestState.QUEUED.value, sa_column=Column(Text, nullable=False))
    reason: str = Field(default="CREATED", sa_column=Column(Text, nullable=False))
    round_trip: bool = Field(default=False, nullable=False)
    # Recipient of the round-trip test message; None: the inbox's own address.
    round_trip_to: str | None = Field(default=None, sa_column=Column(Text))
    inbox_version: int = Field(default=1, nullable=False)
    attempts: int = Field(default=0, nullable=False)
    run_after: datetime = _now()
    lease_expires_at: datetime | None = _ts()
    worker_id: str | None = Field(default=None, sa_column=Column(Text))
    smtp_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    imap_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    dns_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    round_trip_result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _now()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    version: int = Field(default=1, nullable=False)


class AuditEvent(SQLModel, table=True):
    """Who did what to which inbox, when and from where. Never holds a secret: updates record
    the names of the fields that changed, not their values."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_workspace_at", "workspace_id", "at", "id"),
        Index("ix_audit_event_inbox_at", "inbox_id", "at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workspace_id: uuid.UUID = Field(foreign_key="workspace.id", ondelete="CASCADE")
    # Not a foreign key: the trail outlives the inbox it describes.
    inbox_id: uuid.UUID | None = Field(default=None)
    action: str = Field(sa_column=Column(Text, nullable=False))
    api_key_prefix: str | None = Field(default=None, sa_column=Column(Text))
    client_address: str | None = Field(default=None, sa_column=Column(Text))
    details: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    at: datetime = _now()


class LoginSlot(SQLModel, table=True):
    """The latest login (taken or booked) to one account, by every inbox in every workspace.

    ``account`` is ``<address>|<case-folded username>`` for each address the host resolved
    to, and ``<case-folded host>|<case-folded username>``, so neither a second spelling of
    the host nor of the username gets a login of its own."""

    __tablename__ = "login_slot"

    account: str = Field(sa_column=Column(Text, primary_key=True))
    last_login_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ReceivingState(StrEnum):
    CONNECTING = "CONNECTING"
    IDLE = "IDLE"
    POLLING = "POLLING"
    BACKOFF = "BACKOFF"
    DISABLED = "DISABLED"


class InboxWatch(SQLModel, table=True):
    """Who watches an inbox's mailbox, until when, and how that is going.

    One row per inbox that was ever watched. ``owner`` holds the lease: a process watches the
    inbox only while ``expires_at`` is ahead, renews it while it does, and any process takes
    over a lease that expired (its owner died)."""

    __tablename__ = "inbox_watch"

    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE", primary_key=True)
    owner: str | None = Field(default=None, sa_column=Column(Text))
    expires_at: datetime | None = _ts()
    state: str = Field(
        default=ReceivingState.CONNECTING.value, sa_column=Column(Text, nullable=False)
    )
    idle_supported: bool | None = Field(default=None)
    last_error_code: str | None = Field(default=None, sa_column=Column(Text))
    last_error_message: str | None = Field(default=None, sa_column=Column(Text))
    last_error_hint: str | None = Field(default=None, sa_column=Column(Text))
    auth_failures: int = Field(default=0, nullable=False)


class FolderSync(SQLModel, table=True):
    """How far one folder of an inbox has been read: everything up to ``last_uid`` under
    ``uidvalidity`` is stored (or was there before watching began)."""

    __tablename__ = "folder_sync"

    inbox_id: uuid.UUID = Field(foreign_key="email_inbox.id", ondelete="CASCADE", primary_key=True)
    folder: str = Field(sa_column=Column(Text, primary_key=True))
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    highestmodseq: int | None = Field(default=None, sa_column=Column(BigInteger))
    updated_at: datetime = _now()


# The received mail's tables live beside this module (the same metadata); imported last, as
# they use the column helpers above.
from storage.models_mail import DeletedMessage as DeletedMessage  # noqa: E402
from storage.models_mail import Message as Message  # noqa: E402
from storage.models_mail import MessageAction as MessageAction  # noqa: E402
from storage.models_mail import MessageAttachment as MessageAttachment  # noqa: E402
from storage.models_mail import OutgoingAttachment as OutgoingAttachment  # noqa: E402
from storage.models_mail import OutgoingMessage as OutgoingMessage  # noqa: E402
from storage.models_mail import OutgoingState as OutgoingState  # noqa: E402
from storage.models_mail import ReceiverMember as ReceiverMember  # noqa: E402
from storage.models_mail import SendCount as SendCount  # noqa: E402
from storage.models_oauth import OAuthApp as OAuthApp  # noqa: E402
from storage.models_oauth import OAuthState as OAuthState  # noqa: E402
