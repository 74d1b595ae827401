"""Certificate verification and pinning, for both protocols and all TLS modes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

from mail.endpoint import Endpoint
from mail.probes import ProbeCode, ProbeResult, ProbeSettings, Security, probe_imap, probe_smtp
from mail.tls import normalize_fingerprint
from tests.mail.conftest import USERS, EndpointFactory
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer

Probe = Callable[[Endpoint, ProbeSettings], Awaitable[ProbeResult]]
Server = SmtpServer | ImapServer

CASES = [
    pytest.param("smtp", Security.TLS, id="smtp-tls"),
    pytest.param("smtp", Security.STARTTLS, id="smtp-starttls"),
    pytest.param("imap", Security.TLS, id="imap-tls"),
    pytest.param("imap", Security.STARTTLS, id="imap-starttls"),
]


@contextmanager
def running(protocol: str, security: Security, context: object) -> Iterator[Server]:
    server: Server
    if protocol == "smtp":
        mode = SmtpMode.TLS if security is Security.TLS else SmtpMode.STARTTLS
        server = SmtpServer(mode, USERS, ssl_context=context)  # type: ignore[arg-type]
    else:
        imode = ImapMode.TLS if security is Security.TLS else ImapMode.STARTTLS
        server = ImapServer(imode, USERS, ssl_context=context)  # type: ignore[arg-type]
    with server:
        yield server


def probe_for(protocol: str) -> Probe:
    async def run(endpoint: Endpoint, probe_settings: ProbeSettings) -> ProbeResult:
        if protocol == "smtp":
            return await probe_smtp(endpoint, probe_settings)
        return await probe_imap(endpoint, probe_settings)

    return run


@pytest.mark.parametrize(("protocol", "security"), CASES)
async def test_untrusted_certificate_then_pinned(
    protocol: str,
    security: Security,
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    probe = probe_for(protocol)
    with running(protocol, security, certs.untrusted_context) as server:
        refused = await probe(endpoint(server.port, security), probe_settings)

        assert refused.code is ProbeCode.CERTIFICATE_UNTRUSTED
        assert refused.field == f"{protocol}.tlsCertificateSha256"
        assert refused.tls is not None
        assert refused.tls.sha256_fingerprint == certs.untrusted_fingerprint
        assert not refused.tls.trusted and not refused.tls.pinned
        assert certs.untrusted_fingerprint in refused.message
        assert refused.hint is not None and "pin" in refused.hint
        assert server.auth_attempts == 0  # nothing sent before trust was settled

        pinned = await probe(
            endpoint(server.port, security, pin=refused.tls.sha256_fingerprint), probe_settings
        )
        assert pinned.ok, pinned.message
        assert pinned.tls is not None and pinned.tls.pinned and not pinned.tls.trusted

        wrong = "00:" * 31 + "00"
        mismatch = await probe(endpoint(server.port, security, pin=wrong), probe_settings)
        assert mismatch.code is ProbeCode.CERTIFICATE_UNTRUSTED
        assert "does not match" in mismatch.message
        assert server.auth_attempts == 1  # only the pinned probe logged in


async def test_pin_accepts_plain_lowercase_hex(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    plain = normalize_fingerprint(certs.untrusted_fingerprint)
    assert ":" not in plain and plain == plain.lower()
    with running("imap", Security.TLS, certs.untrusted_context) as server:
        result = await probe_imap(endpoint(server.port, Security.TLS, pin=plain), probe_settings)
    assert result.ok, result.message


async def test_expired_certificate_is_untrusted(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with running("smtp", Security.TLS, certs.expired_context) as server:
        result = await probe_smtp(endpoint(server.port, Security.TLS), probe_settings)
    assert result.code is ProbeCode.CERTIFICATE_UNTRUSTED
    assert "expired" in result.message
    assert result.tls is not None and result.tls.sha256_fingerprint == certs.expired_fingerprint


async def test_trusted_certificate_with_other_pin_still_ok(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    # A pin adds trust; it does not revoke a chain that verifies (e.g. after a renewal).
    with running("smtp", Security.STARTTLS, certs.server_context) as server:
        result = await probe_smtp(
            endpoint(server.port, Security.STARTTLS, pin=certs.untrusted_fingerprint),
            probe_settings,
        )
    assert result.ok
    assert result.tls is not None and result.tls.trusted and not result.tls.pinned


async def test_without_ca_file_the_test_ca_is_untrusted(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    system_only = ProbeSettings(
        connect_timeout=probe_settings.connect_timeout,
        overall_timeout=probe_settings.overall_timeout,
        network=probe_settings.network,
    )
    with running("imap", Security.TLS, certs.server_context) as server:
        result = await probe_imap(endpoint(server.port, Security.TLS), system_only)
    assert result.code is ProbeCode.CERTIFICATE_UNTRUSTED
