"""GraphQL object types. Each is built once from its row by ``from_row``: no per-field resolvers
on hot types, so Strawberry can take its fast path for plain attributes."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from mail import discovery, dns_checks, presets, results
from resolvers import inboxes
from resolvers.pagination import check_first, encode_cursor
from resolvers.validation import InputInvalid
from schema.context import Info, bad_input, caller
from storage import models
from storage.models import Permission
from storage.rows import InboxRow, TestRow

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


CheckState = strawberry.enum(
    dns_checks.CheckState,
    description="PASS: fine. WARN: works, should improve. FAIL: wrong, fix it. MISSING: no "
    "record. ERROR: DNS did not answer (timeout, SERVFAIL); says nothing about the record.",
)


@strawberry.type(description="One DNS record family of the inbox's domain.")
class RecordCheck:
    state: CheckState  # type: ignore[valid-type]
    records: list[str]
    message: str = strawberry.field(description="What was found, and what to add or change.")
    details: JSON


@strawberry.type(description="The inbox domain's mail DNS: MX, SPF, DKIM and DMARC.")
class DomainSetupStatus:
    domain: str
    smtp_host: str | None
    checked_at: datetime
    overall: CheckState  # type: ignore[valid-type]
    mx: RecordCheck
    spf: RecordCheck
    dkim: RecordCheck
    dmarc: RecordCheck

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DomainSetupStatus | None:
        if not data or "mx" not in data:
            return None
        status = dns_checks.DomainSetupStatus.from_dict(data)

        def record(check: dns_checks.RecordCheck) -> RecordCheck:
            return RecordCheck(
                state=check.state,
                records=list(check.records),
                message=check.message,
                details=cast(JSON, check.details),
            )

        return cls(
            domain=status.domain,
            smtp_host=status.smtp_host,
            checked_at=status.checked_at,
            overall=status.overall,
            mx=record(status.mx),
            spf=record(status.spf),
            dkim=record(status.dkim),
            dmarc=record(status.dmarc),
        )


DiscoverySource = strawberry.enum(discovery.DiscoverySource)


@strawberry.type(description="Suggested server settings, where they came from, and how sure.")
class ServerSuggestion:
    host: str
    port: int
    security: Security  # type: ignore[valid-type]
    source: DiscoverySource  # type: ignore[valid-type]
    confidence: float


@strawberry.type(description="Mail settings discovered for an address; both sides null if none.")
class MailSettingsDiscovery:
    email: str
    domain: str
    provider: Provider | None  # type: ignore[valid-type]
    smtp: ServerSuggestion | None
    imap: ServerSuggestion | None
    errors: list[str] = strawberry.field(
        description="DNS lookups that failed: the answer may be incomplete."
    )

    @classmethod
    def from_discovery(cls, found: discovery.Discovery) -> MailSettingsDiscovery:
        def side(s: discovery.ServerSuggestion | None) -> ServerSuggestion | None:
            if s is None:
                return None
            return ServerSuggestion(
                host=s.host,
                port=s.port,
                security=s.security,
                source=s.source,
                confidence=s.confidence,
            )

        return cls(
            email=found.email,
            domain=found.domain,
            provider=found.provider,
            smtp=side(found.smtp),
            imap=side(found.imap),
            errors=list(found.errors),
        )


@strawberry.type(description="A real message sent through SMTP and looked for over IMAP.")
class RoundTripResult:
    ok: bool
    sent: bool
    received: bool | None = strawberry.field(
        description="Null when the message went to another address (not checked)."
    )
    deleted: bool
    delay_ms: int | None
    message_id: str
    code: str
    message: str
    hint: str | None
    field: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RoundTripResult | None:
        if not data:
            return None
        return cls(
            ok=bool(data.get("ok")),
            sent=bool(data.get("sent")),
            received=data.get("received"),
            deleted=bool(data.get("deleted")),
            delay_ms=data.get("delay_ms"),
            message_id=str(data.get("message_id", "")),
            code=str(data.get("code", "")),
            message=str(data.get("message", "")),
            hint=data.get("hint"),
            field=data.get("field"),
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
    setup_status: DomainSetupStatus | None = strawberry.field(
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
    def from_row(cls, row: models.EmailInbox | InboxRow) -> EmailInbox:
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
            dkim_selectors=list(row.dkim_selectors or []),
            setup_status=DomainSetupStatus.from_dict(row.setup_status),
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


def page_info(cursors: list[str], has_next: bool, after: str | None) -> PageInfo:
    return PageInfo(
        has_next_page=has_next,
        has_previous_page=after is not None,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
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
    dns: DomainSetupStatus | None = strawberry.field(
        description="The domain setup check run beside it."
    )
    round_trip: RoundTripResult | None
    error: str | None = strawberry.field(description="Summary of what failed, if anything.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int

    @classmethod
    def from_row(cls, row: models.ConnectionTest | TestRow) -> ConnectionTest:
        return cls(
            id=strawberry.ID(str(row.id)),
            inbox_id=strawberry.ID(str(row.inbox_id)),
            state=models.TestState(row.state),
            reason=row.reason,
            attempts=row.attempts,
            smtp=ProbeResult.from_dict(row.smtp_result),
            imap=ProbeResult.from_dict(row.imap_result),
            dns=DomainSetupStatus.from_dict(row.dns_result),
            round_trip=RoundTripResult.from_dict(row.round_trip_result),
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


@strawberry.type(description="Who did what to which inbox, when, from where. Never a secret.")
class AuditEvent:
    id: strawberry.ID
    action: str = strawberry.field(
        description="INBOX_CREATED, INBOX_UPDATED, INBOX_DELETED, CONNECTION_TEST_REQUESTED, "
        "TEST_EMAIL_REQUESTED, DOMAIN_CHECKED."
    )
    inbox_id: strawberry.ID | None
    api_key_prefix: str | None = strawberry.field(description="The visible part of the key.")
    client_address: str | None
    details: JSON = strawberry.field(description="E.g. the names of the fields changed.")
    at: datetime

    @classmethod
    def from_row(cls, row: models.AuditEvent) -> AuditEvent:
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
