"""GraphQL object types. Each is built once from its row by ``from_row``: no per-field resolvers
on hot types, so Strawberry can take its fast path for plain attributes."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from mail import presets, results
from resolvers import inboxes
from resolvers.validation import InputInvalid
from schema.context import Info, bad_input, caller
from storage import models
from storage.models import Permission

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

    @strawberry.field(description="Verification history, newest first.")
    async def connection_tests(
        self, info: Info, first: int = 10, after: str | None = None
    ) -> ConnectionTestConnection:
        principal = caller(info, Permission.VIEW_EMAIL_INBOX)
        try:
            rows, has_next = await inboxes.list_tests(
                info.context.state, principal, str(self.id), first=first, after=after
            )
        except InputInvalid as exc:
            raise bad_input(exc) from None
        edges = [
            ConnectionTestEdge(
                cursor=inboxes.encode_test_cursor(r), node=ConnectionTest.from_row(r)
            )
            for r in rows
        ]
        return ConnectionTestConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

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


ProbeCode = strawberry.enum(
    results.ProbeCode,
    description="What a probe found. TIMEOUT, CONNECTION_REFUSED and HOST_NOT_FOUND are "
    "retried automatically; every other failure needs a change to the inbox's settings.",
)


@strawberry.type(description="The TLS session and the server certificate a probe saw.")
class TlsDetails:
    version: str | None
    cipher: str | None
    subject: str | None
    issuer: str | None
    not_before: str | None
    not_after: str | None
    sha256_fingerprint: str | None = strawberry.field(
        description="Pin this (`tlsCertificateSha256`) to trust a self-signed certificate."
    )
    trusted: bool
    pinned: bool


@strawberry.type(description="One side's verification: did the login work, and if not, why.")
class ProbeResult:
    ok: bool
    code: ProbeCode  # type: ignore[valid-type]
    message: str
    hint: str | None = strawberry.field(description="What to change to fix it.")
    field: str | None = strawberry.field(description="The input to fix, e.g. `smtp.password`.")
    latency_ms: int
    tls: TlsDetails | None
    capabilities: list[str]
    auth_mechanisms: list[str]
    greeting: str | None
    size_limit: int | None
    message_count: int | None
    transient: bool

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProbeResult | None:
        if not data:
            return None
        result = results.ProbeResult.from_dict(data)
        tls = result.tls
        return cls(
            ok=result.ok,
            code=result.code,
            message=result.message,
            hint=result.hint,
            field=result.field,
            latency_ms=result.latency_ms,
            tls=TlsDetails(
                version=tls.version,
                cipher=tls.cipher,
                subject=tls.subject,
                issuer=tls.issuer,
                not_before=tls.not_before,
                not_after=tls.not_after,
                sha256_fingerprint=tls.sha256_fingerprint,
                trusted=tls.trusted,
                pinned=tls.pinned,
            )
            if tls
            else None,
            capabilities=result.capabilities,
            auth_mechanisms=result.auth_mechanisms,
            greeting=result.greeting,
            size_limit=result.size_limit,
            message_count=result.message_count,
            transient=result.transient,
        )


@strawberry.type(description="One verification of an inbox's SMTP and IMAP settings.")
class ConnectionTest:
    id: strawberry.ID
    inbox_id: strawberry.ID
    state: ConnectionTestState  # type: ignore[valid-type]
    reason: str = strawberry.field(description="Why it ran: CREATED, SETTINGS_CHANGED, MANUAL.")
    attempts: int
    smtp: ProbeResult | None
    imap: ProbeResult | None
    dns: JSON | None = strawberry.field(description="The domain setup check run beside it.")
    round_trip: JSON | None
    error: str | None = strawberry.field(description="Summary of what failed, if anything.")
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
            smtp=ProbeResult.from_dict(row.smtp_result),
            imap=ProbeResult.from_dict(row.imap_result),
            dns=_json(row.dns_result),
            round_trip=_json(row.round_trip_result),
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            version=row.version,
        )


@strawberry.type
class ConnectionTestEdge:
    cursor: str
    node: ConnectionTest


@strawberry.type
class ConnectionTestConnection:
    edges: list[ConnectionTestEdge]
    page_info: PageInfo
