"""GraphQL object types. Each is built once from its row by ``from_row``: no per-field resolvers
on hot types, so Strawberry can take its fast path for plain attributes."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from mail import presets
from storage import models

InboxStatus = strawberry.enum(
    models.InboxStatus, description="Where an inbox's verification stands."
)
Provider = strawberry.enum(presets.Provider, description="Mail provider; CUSTOM for any other.")
Security = strawberry.enum(
    presets.Security,
    description="TLS: implicit TLS from the first byte (465, 993). STARTTLS: plain, then "
    "upgraded (587, 143). NONE: no encryption (only for servers on a trusted network).",
)
DeleteMessagePolicy = strawberry.enum(models.DeleteMessagePolicy)
ConnectionTestState = strawberry.enum(models.TestState, name="ConnectionTestState")


@strawberry.enum(description="The permissions an API key can carry.")
class PermissionName(Enum):
    MANAGE_EMAIL_INBOX = "manage-email-inbox"
    VIEW_EMAIL_INBOX = "view-email-inbox"


@strawberry.type(description="One side (SMTP or IMAP) of an inbox. The password is write-only.")
class ServerSettings:
    host: str
    port: int
    security: Security  # type: ignore[valid-type]
    username: str
    has_password: bool
    tls_certificate_sha256: str | None = strawberry.field(
        description="Pinned SHA-256 fingerprint of the server's certificate, if any."
    )


def _json(value: dict[str, Any] | None) -> JSON | None:
    return cast(JSON, value)


def _server(row: models.EmailInbox, side: str) -> ServerSettings:
    return ServerSettings(
        host=getattr(row, f"{side}_host"),
        port=getattr(row, f"{side}_port"),
        security=presets.Security(getattr(row, f"{side}_security")),
        username=getattr(row, f"{side}_username"),
        has_password=bool(getattr(row, f"{side}_password")),
        tls_certificate_sha256=getattr(row, f"{side}_tls_certificate_sha256"),
    )


@strawberry.type(description="An email address with SMTP for outgoing and IMAP for incoming mail.")
class EmailInbox:
    id: strawberry.ID
    name: str
    email: str
    display_name: str
    description: str | None
    sender_info: str | None
    department: str | None
    active: bool = strawberry.field(description="The user's on/off switch.")
    provider: Provider  # type: ignore[valid-type]
    status: InboxStatus  # type: ignore[valid-type]
    status_reason: str | None
    smtp: ServerSettings
    imap: ServerSettings
    daily_send_limit: int
    sending_enabled: bool
    signature: str | None = strawberry.field(description="HTML, sanitised on the way in.")
    tags: list[str]
    reply_to: str | None
    delete_message_policy: DeleteMessagePolicy  # type: ignore[valid-type]
    notify_on_new_messages: bool
    notification_email: str | None
    dkim_selectors: list[str]
    setup_status: JSON | None = strawberry.field(
        description="DNS setup check of the inbox's domain (MX, SPF, DKIM, DMARC)."
    )
    last_verified_at: datetime | None
    last_check_at: datetime | None
    error_count: int
    last_message_id: str | None
    created_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_row(cls, row: models.EmailInbox) -> EmailInbox:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            email=row.email,
            display_name=row.display_name,
            description=row.description,
            sender_info=row.sender_info,
            department=row.department,
            active=row.active,
            provider=presets.Provider(row.provider),
            status=models.InboxStatus(row.status),
            status_reason=row.status_reason,
            smtp=_server(row, "smtp"),
            imap=_server(row, "imap"),
            daily_send_limit=row.daily_send_limit,
            sending_enabled=row.sending_enabled,
            signature=row.signature,
            tags=list(row.tags),
            reply_to=row.reply_to,
            delete_message_policy=models.DeleteMessagePolicy(row.delete_message_policy),
            notify_on_new_messages=row.notify_on_new_messages,
            notification_email=row.notification_email,
            dkim_selectors=list(row.dkim_selectors or []),
            setup_status=_json(row.setup_status),
            last_verified_at=row.last_verified_at,
            last_check_at=row.last_check_at,
            error_count=row.error_count,
            last_message_id=row.last_message_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class EmailInboxEdge:
    cursor: str
    node: EmailInbox


@strawberry.type
class EmailInboxConnection:
    edges: list[EmailInboxEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class WorkspaceInfo:
    id: strawberry.ID
    name: str
    max_inboxes: int
    subscription_active: bool


@strawberry.type(description="The caller: its workspace, permissions and inbox usage.")
class Viewer:
    workspace: WorkspaceInfo
    permissions: list[str]
    inbox_usage: int
    inbox_limit: int


@strawberry.type(description="One verification of an inbox's SMTP and IMAP settings.")
class ConnectionTest:
    id: strawberry.ID
    inbox_id: strawberry.ID
    state: ConnectionTestState  # type: ignore[valid-type]
    reason: str
    attempts: int
    smtp: JSON | None
    imap: JSON | None
    dns: JSON | None
    round_trip: JSON | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int

    @classmethod
    def from_row(cls, row: models.ConnectionTest) -> ConnectionTest:
        return cls(
            id=strawberry.ID(str(row.id)),
            inbox_id=strawberry.ID(str(row.inbox_id)),
            state=models.TestState(row.state),
            reason=row.reason,
            attempts=row.attempts,
            smtp=_json(row.smtp_result),
            imap=_json(row.imap_result),
            dns=_json(row.dns_result),
            round_trip=_json(row.round_trip_result),
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            version=row.version,
        )
