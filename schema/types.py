"""GraphQL object types of inboxes, the caller and the audit log. Each is built once from its row
by ``from_row``: no per-field resolvers on hot types, so Strawberry can take its fast path for
plain attributes. Verification results are in ``schema.checks``."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from mail import presets
from resolvers import inboxes
from resolvers.pagination import check_first, encode_cursor
from resolvers.validation import InputInvalid
from schema.checks import (
    ConnectionTest,
    ConnectionTestConnection,
    ConnectionTestEdge,
    DomainSetupStatus,
)
from schema.context import Info, bad_input, caller
from schema.enums import (
    AuthMethod,
    DeleteMessagePolicy,
    InboxStatus,
    Provider,
    Security,
)
from schema.messages import InboxReceiving
from schema.oauth import InboxOAuth, inbox_login
from schema.pagination import PageInfo, page_info
from schema.sending import InboxSending
from storage import models
from storage.models import Permission
from storage.rows import AuditRow, InboxRow


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


# Enum members by stored value: a dict lookup where calling the Enum costs a microsecond, for
# every row of every page.
_SECURITY = {m.value: m for m in presets.Security}
_PROVIDER = {m.value: m for m in presets.Provider}
_STATUS = {m.value: m for m in models.InboxStatus}
_DELETE_POLICY = {m.value: m for m in models.DeleteMessagePolicy}


def _server(
    host: str, port: int, security: str, username: str, password: bytes, pin: str | None
) -> ServerSettings:
    return ServerSettings(
        host=host,
        port=port,
        security=_SECURITY[security],
        username=username,
        has_password=bool(password),
        tls_certificate_sha256=pin,
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
    time_zone: str | None = strawberry.field(
        description="IANA name; the daily send limit counts its days (null: UTC)."
    )
    sending: InboxSending
    dkim_selectors: list[str]
    setup_status: DomainSetupStatus | None = strawberry.field(
        description="DNS setup check of the inbox's domain (MX, SPF, DKIM, DMARC)."
    )
    last_verified_at: datetime | None
    last_check_at: datetime | None
    error_count: int
    last_message_id: str | None = strawberry.field(
        description="The id of the last message received (see `message(id)`)."
    )
    receiving: InboxReceiving
    auth_method: AuthMethod  # type: ignore[valid-type]
    oauth: InboxOAuth | None = strawberry.field(
        description="The OAuth login (authMethod OAUTH2); null for PASSWORD."
    )
    created_at: datetime
    updated_at: datetime
    version: int

    @strawberry.field(description="Verification history, newest first.")
    async def connection_tests(
        self, info: Info, first: int = 10, after: str | None = None
    ) -> ConnectionTestConnection:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        try:
            check_first(first, info.context.state.max_page_size)
            if after is None:
                # The usual case (a list of inboxes, each with its latest tests) is batched.
                loader = info.context.extra.get("tests_loader")
                if loader is None:
                    loader = inboxes.tests_loader(info.context.state, principal)
                    info.context.extra["tests_loader"] = loader
                rows, has_next = await loader.load((str(self.id), first))
            else:
                rows, has_next = await inboxes.list_tests(
                    info.context.state, principal, str(self.id), first=first, after=after
                )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        edges = [
            ConnectionTestEdge(
                cursor=encode_cursor(r.created_at, r.id), node=ConnectionTest.from_row(r)
            )
            for r in rows
        ]
        return ConnectionTestConnection(
            edges=edges, page_info=page_info([e.cursor for e in edges], has_next, after)
        )

    @classmethod
    def from_row(cls, row: InboxRow) -> EmailInbox:
        auth_method, oauth = inbox_login(row)
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            email=row.email,
            display_name=row.display_name,
            description=row.description,
            sender_info=row.sender_info,
            department=row.department,
            active=row.active,
            provider=_PROVIDER[row.provider],
            status=_STATUS[row.status],
            status_reason=row.status_reason,
            smtp=_server(
                row.smtp_host,
                row.smtp_port,
                row.smtp_security,
                row.smtp_username,
                row.smtp_password,
                row.smtp_tls_certificate_sha256,
            ),
            imap=_server(
                row.imap_host,
                row.imap_port,
                row.imap_security,
                row.imap_username,
                row.imap_password,
                row.imap_tls_certificate_sha256,
            ),
            daily_send_limit=row.daily_send_limit,
            sending_enabled=row.sending_enabled,
            signature=row.signature,
            tags=list(row.tags),
            reply_to=row.reply_to,
            delete_message_policy=_DELETE_POLICY[row.delete_message_policy],
            notify_on_new_messages=row.notify_on_new_messages,
            notification_email=row.notification_email,
            time_zone=row.time_zone,
            sending=InboxSending(copy_to_sent_folder=row.sending_copy_to_sent_folder),
            dkim_selectors=list(row.dkim_selectors or []),
            setup_status=DomainSetupStatus.from_dict(row.setup_status),
            last_verified_at=row.last_verified_at,
            last_check_at=row.last_check_at,
            error_count=row.error_count,
            last_message_id=row.last_message_id,
            receiving=InboxReceiving(
                enabled=row.receiving_enabled,
                folders=list(row.receiving_folders),
                backfill_days=row.receiving_backfill_days,
                last_check_at=row.last_check_at,
                _inbox_id=row.id,
                _watched=row.receiving_enabled and row.active and row.status == "ACTIVE",
            ),
            auth_method=auth_method,
            oauth=oauth,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )


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


@strawberry.type(description="Who did what to which inbox, when, from where. Never a secret.")
class AuditEvent:
    id: strawberry.ID
    action: str = strawberry.field(
        description="INBOX_CREATED, INBOX_UPDATED, INBOX_DELETED, CONNECTION_TEST_REQUESTED, "
        "TEST_EMAIL_REQUESTED, DOMAIN_CHECKED, MESSAGE_FLAGS_SET, MESSAGE_DELETED, "
        "OAUTH_APP_CONFIGURED, OAUTH_CONNECTION_STARTED."
    )
    inbox_id: strawberry.ID | None
    api_key_prefix: str | None = strawberry.field(description="The visible part of the key.")
    client_address: str | None
    details: JSON = strawberry.field(description="E.g. the names of the fields changed.")
    at: datetime

    @classmethod
    def from_row(cls, row: AuditRow) -> AuditEvent:
        return cls(
            id=strawberry.ID(str(row.id)),
            action=row.action,
            inbox_id=strawberry.ID(str(row.inbox_id)) if row.inbox_id else None,
            api_key_prefix=row.api_key_prefix,
            client_address=row.client_address,
            details=cast(JSON, row.details),
            at=row.at,
        )


@strawberry.type
class AuditEventEdge:
    cursor: str
    node: AuditEvent


@strawberry.type
class AuditEventConnection:
    edges: list[AuditEventEdge]
    page_info: PageInfo
