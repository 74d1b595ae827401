"""What a connection probe reports: a JSON-safe value the API can store and show as is.

Results carry facts the user can act on (code, field, hint) and never a credential: every
text that reaches them is built here or scrubbed by the probe runner first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

Protocol = Literal["smtp", "imap"]


class ProbeCode(StrEnum):
    OK = "OK"
    AUTH_FAILED = "AUTH_FAILED"
    TLS_HANDSHAKE_FAILED = "TLS_HANDSHAKE_FAILED"
    CERTIFICATE_UNTRUSTED = "CERTIFICATE_UNTRUSTED"
    CONNECTION_REFUSED = "CONNECTION_REFUSED"
    TIMEOUT = "TIMEOUT"
    HOST_NOT_FOUND = "HOST_NOT_FOUND"
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"
    STARTTLS_UNSUPPORTED = "STARTTLS_UNSUPPORTED"
    PLAINTEXT_AUTH_REFUSED = "PLAINTEXT_AUTH_REFUSED"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    # The stored password cannot be decrypted (its key left the key ring, or the row is damaged).
    SECRET_UNREADABLE = "SECRET_UNREADABLE"
    # OAuth inboxes. TOKEN_REJECTED: the mail server refused the access token (XOAUTH2 /
    # OAUTHBEARER); the caller refreshes it once and retries, never in a loop.
    # REAUTH_REQUIRED: the provider refused the refresh token (consent revoked or expired), or
    # an externally managed token expired: the user must connect the account again.
    TOKEN_REJECTED = "TOKEN_REJECTED"
    REAUTH_REQUIRED = "REAUTH_REQUIRED"
    UNEXPECTED = "UNEXPECTED"


# Failures that may pass on their own (network weather), so a caller may retry later;
# every other code needs the user to change something.
TRANSIENT_CODES = frozenset(
    {ProbeCode.TIMEOUT, ProbeCode.CONNECTION_REFUSED, ProbeCode.HOST_NOT_FOUND}
)


@dataclass(slots=True)
class TlsInfo:
    """Facts about the negotiated TLS session and the server's leaf certificate.

    `sha256_fingerprint` is the SHA-256 of the leaf certificate's DER bytes, written as
    uppercase hex pairs joined by colons ("AB:CD:..."), the form `openssl x509 -fingerprint
    -sha256` prints. Pins are compared after normalising both sides, so users may paste
    either that form or plain hex.
    Dates are ISO 8601 in UTC. `trusted` means the chain verified against the trust store
    (and the name matched); `pinned` means the leaf matched the endpoint's pinned fingerprint.
    """

    version: str | None
    cipher: str | None
    subject: str | None
    issuer: str | None
    not_before: str | None
    not_after: str | None
    sha256_fingerprint: str | None
    trusted: bool
    pinned: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "sha256_fingerprint": self.sha256_fingerprint,
            "trusted": self.trusted,
            "pinned": self.pinned,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TlsInfo:
        return cls(
            version=data.get("version"),
            cipher=data.get("cipher"),
            subject=data.get("subject"),
            issuer=data.get("issuer"),
            not_before=data.get("not_before"),
            not_after=data.get("not_after"),
            sha256_fingerprint=data.get("sha256_fingerprint"),
            trusted=bool(data.get("trusted", False)),
            pinned=bool(data.get("pinned", False)),
        )


@dataclass(slots=True)
class ProbeResult:
    # `field` names the input field to blame ("smtp.password"), so dataclasses.field is
    # spelled in full below: the attribute shadows it inside the class body.
    protocol: Protocol
    ok: bool
    code: ProbeCode
    message: str
    hint: str | None = None
    field: str | None = None
    latency_ms: int = 0
    tls: TlsInfo | None = None
    capabilities: list[str] = dataclasses.field(default_factory=list)
    auth_mechanisms: list[str] = dataclasses.field(default_factory=list)
    greeting: str | None = None
    size_limit: int | None = None
    message_count: int | None = None

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "ok": self.ok,
            "code": self.code.value,
            "message": self.message,
            "hint": self.hint,
            "field": self.field,
            "latency_ms": self.latency_ms,
            "tls": self.tls.to_dict() if self.tls else None,
            "capabilities": list(self.capabilities),
            "auth_mechanisms": list(self.auth_mechanisms),
            "greeting": self.greeting,
            "size_limit": self.size_limit,
            "message_count": self.message_count,
            "transient": self.transient,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        protocol = data["protocol"]
        if protocol not in ("smtp", "imap"):
            raise ValueError(f"unknown protocol {protocol!r}")
        tls = data.get("tls")
        return cls(
            protocol=protocol,
            ok=bool(data["ok"]),
            code=ProbeCode(data["code"]),
            message=str(data["message"]),
            hint=data.get("hint"),
            field=data.get("field"),
            latency_ms=int(data.get("latency_ms", 0)),
            tls=TlsInfo.from_dict(tls) if tls else None,
            capabilities=list(data.get("capabilities") or []),
            auth_mechanisms=list(data.get("auth_mechanisms") or []),
            greeting=data.get("greeting"),
            size_limit=data.get("size_limit"),
            message_count=data.get("message_count"),
        )
