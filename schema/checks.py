"""GraphQL types of verification: connection tests, their per-side results, DNS and discovery."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from mail import discovery, dns_checks, results
from schema.enums import (
    CheckState,
    ConnectionTestState,
    DiscoverySource,
    ProbeCode,
    Provider,
    Security,
)
from schema.pagination import PageInfo
from storage import models
from storage.rows import TestRow


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
    def from_row(cls, row: TestRow) -> ConnectionTest:
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
