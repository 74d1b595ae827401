"""probe_imap against a real pymap server (and scripted servers) on 127.0.0.1."""

from __future__ import annotations

from mail.presets import Provider, app_password_hint
from mail.probes import ProbeCode, ProbeSettings, Security, probe_imap
from tests.mail.conftest import USER, USERS, EndpointFactory
from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    LineServer,
    MailCerts,
    closed_port,
    imap_script,
)


async def test_implicit_tls_login_ok(
    imap_tls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings, certs: MailCerts
) -> None:
    imap_tls.deliver(USER, b"Subject: one\r\n\r\nfirst\r\n")
    imap_tls.deliver(USER, b"Subject: two\r\n\r\nsecond\r\n")

    result = await probe_imap(endpoint(imap_tls.port, Security.TLS), probe_settings)

    assert result.ok, result.message
    assert result.protocol == "imap"
    assert result.tls is not None and result.tls.trusted
    assert result.tls.sha256_fingerprint == certs.fingerprint
    assert "IDLE" in result.capabilities  # post-login capabilities
    assert "IMAP4REV1" in result.capabilities
    assert {"PLAIN", "LOGIN"} <= set(result.auth_mechanisms)
    assert result.message_count == 2
    assert result.greeting and result.greeting.startswith("* OK")


async def test_starttls_login_ok(
    imap_starttls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_imap(endpoint(imap_starttls.port, Security.STARTTLS), probe_settings)

    assert result.ok, result.message
    assert result.tls is not None and result.tls.trusted
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "STARTTLS" not in result.capabilities  # asked again after the upgrade
    assert result.message_count == 0


async def test_plaintext_login_ok(endpoint: EndpointFactory, probe_settings: ProbeSettings) -> None:
    with ImapServer(ImapMode.PLAIN, USERS) as server:
        result = await probe_imap(endpoint(server.port, Security.NONE), probe_settings)
    assert result.ok, result.message
    assert result.tls is None


async def test_non_ascii_password_goes_as_literal(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with ImapServer(ImapMode.PLAIN, {"carol@example.test": "pässwörd-ü"}) as server:
        good = await probe_imap(
            endpoint(
                server.port, Security.NONE, username="carol@example.test", password="pässwörd-ü"
            ),
            probe_settings,
        )
        bad = await probe_imap(
            endpoint(
                server.port, Security.NONE, username="carol@example.test", password="pässwörd"
            ),
            probe_settings,
        )
    assert good.ok, good.message
    assert bad.code is ProbeCode.AUTH_FAILED


async def test_wrong_password_is_refused_after_one_login(
    imap_tls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    logins_before = imap_tls.auth_attempts
    result = await probe_imap(
        endpoint(imap_tls.port, Security.TLS, password="nope"), probe_settings
    )

    assert result.code is ProbeCode.AUTH_FAILED
    assert result.field == "imap.password"
    assert not result.transient  # a refusal, not a timeout
    assert imap_tls.auth_attempts - logins_before == 1  # and no second try
    assert result.message_count is None


async def test_wrong_password_with_provider_hint(
    imap_starttls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_imap(
        endpoint(imap_starttls.port, Security.STARTTLS, password="nope"),
        probe_settings,
        provider=Provider.OUTLOOK,
    )
    assert result.code is ProbeCode.AUTH_FAILED
    assert result.hint == app_password_hint(Provider.OUTLOOK)


async def test_closed_port(endpoint: EndpointFactory, probe_settings: ProbeSettings) -> None:
    result = await probe_imap(endpoint(closed_port(), Security.TLS), probe_settings)
    assert result.code is ProbeCode.CONNECTION_REFUSED
    assert result.field == "imap.port"
    assert result.transient


async def test_implicit_tls_against_starttls_port(
    imap_starttls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_imap(endpoint(imap_starttls.port, Security.TLS), probe_settings)
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert result.field == "imap.security"
    assert result.hint is not None and "993" in result.hint and "STARTTLS" in result.hint


async def test_starttls_against_implicit_tls_port(
    imap_tls: ImapServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_imap(endpoint(imap_tls.port, Security.STARTTLS), probe_settings)
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert result.hint is not None and "set security to TLS" in result.hint
    assert "port 143 for STARTTLS" in result.hint


async def test_server_without_starttls(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with ImapServer(ImapMode.PLAIN, USERS) as server:
        result = await probe_imap(endpoint(server.port, Security.STARTTLS), probe_settings)
    assert result.code is ProbeCode.STARTTLS_UNSUPPORTED
    assert result.field == "imap.security"


async def test_logindisabled_is_plaintext_auth_refused(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    script = imap_script("IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN")
    with LineServer(b"* OK ready\r\n", script) as server:
        result = await probe_imap(endpoint(server.port, Security.NONE), probe_settings)
        sent = b"".join(server.received)
    assert result.code is ProbeCode.PLAINTEXT_AUTH_REFUSED
    assert result.field == "imap.security"
    assert result.hint is not None and "STARTTLS" in result.hint
    assert b"LOGIN" not in sent.replace(b"LOGOUT", b"")  # no credential went out


async def test_refused_starttls(endpoint: EndpointFactory, probe_settings: ProbeSettings) -> None:
    # Advertises STARTTLS but answers NO: the probe must not fall back to plaintext LOGIN.
    with LineServer(b"* OK ready\r\n", imap_script("IMAP4rev1 STARTTLS")) as server:
        result = await probe_imap(endpoint(server.port, Security.STARTTLS), probe_settings)
        sent = b"".join(server.received)
    assert result.code is ProbeCode.STARTTLS_UNSUPPORTED
    assert b"LOGIN" not in sent.replace(b"LOGOUT", b"")


async def test_bye_greeting(endpoint: EndpointFactory, probe_settings: ProbeSettings) -> None:
    with LineServer(b"* BYE too many connections\r\n", imap_script("IMAP4rev1")) as server:
        result = await probe_imap(endpoint(server.port, Security.NONE), probe_settings)
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert "too many connections" in result.message
