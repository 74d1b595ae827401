"""What a probe connects to and how: plain values, free of storage or schema types."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mail.network import NetworkPolicy
from mail.presets import Security


class SecretLike(Protocol):
    """Anything that hands out a secret only when asked: ``storage.secrets.Secret``, the
    project's one secret type (mail does not import storage, so it names the shape)."""

    def reveal(self) -> str: ...


class Login(StrEnum):
    """How a session authenticates.

    PASSWORD: LOGIN / AUTH PLAIN / AUTH LOGIN / CRAM-MD5 with ``Endpoint.password``.
    OAUTH2: SASL XOAUTH2 (OAUTHBEARER where the server offers only that), with the access
    token in ``Endpoint.password``; whoever builds the endpoint hands a token that is fresh.
    """

    PASSWORD = "PASSWORD"
    OAUTH2 = "OAUTH2"


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    security: Security
    username: str
    # repr=False: an Endpoint in a log line or traceback must not show even a secret's repr.
    # With ``login=Login.OAUTH2`` this is the access token, not a password.
    password: SecretLike = dataclasses.field(repr=False)
    tls_certificate_sha256: str | None = None
    login: Login = Login.PASSWORD

    def __post_init__(self) -> None:
        # Callers holding the raw "STARTTLS" string get the enum: probes compare by identity.
        object.__setattr__(self, "security", Security(self.security))


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Limits for one probe.

    `connect_timeout` bounds each network wait: TCP connect, TLS handshake and every server
    reply (greeting included). `overall_timeout` bounds the whole probe, DNS to logout.
    `ca_file` adds a PEM bundle to the system trust store. `ehlo_hostname` is what SMTP
    EHLO announces; the default avoids a reverse lookup of this machine's name.
    """

    connect_timeout: float = 10.0
    overall_timeout: float = 30.0
    network: NetworkPolicy = dataclasses.field(default_factory=NetworkPolicy)
    ca_file: str | None = None
    ehlo_hostname: str = "localhost"

    def __post_init__(self) -> None:
        # Checked here so a bad value fails at configuration time, not mid-connection.
        name = self.ehlo_hostname
        if not name or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ValueError("ehlo_hostname must be a non-empty name without spaces")
        if self.connect_timeout <= 0 or self.overall_timeout <= 0:
            raise ValueError("timeouts must be positive")
