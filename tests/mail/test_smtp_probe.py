"""probe_smtp against real aiosmtpd servers on 127.0.0.1."""

from __future__ import annotations

from mail.presets import Provider, app_password_hint
from mail.probes import NetworkPolicy, ProbeCode, ProbeSettings, Security, probe_smtp
from tests.mail.conftest import USERS, EndpointFactory
from tests.support.mailservers import LineServer, MailCerts, SmtpMode, SmtpServer, closed_port


async def test_starttls_login_ok(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    certs: MailCerts,
) -> None:
    result = await probe_smtp(endpoint(smtp_starttls.port, Security.STARTTLS), probe_settings)

    assert result.ok, result.message
    assert result.code is ProbeCode.OK
    assert result.protocol == "smtp"
    assert result.tls is not None
    assert result.tls.trusted and not result.tls.pinned
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert result.tls.cipher
    assert result.tls.sha256_fingerprint == certs.fingerprint
    assert result.tls.subject and result.tls.issuer
    assert result.tls.not_after and result.tls.not_after > result.tls.not_before  # type: ignore[operator]
    assert set(result.auth_mechanisms) == {"PLAIN", "LOGIN"}
    assert "SIZE" in result.capabilities
    assert result.size_limit == smtp_starttls.size_limit
    assert result.greeting and result.greeting.startswith("220")
    assert result.latency_ms >= 0
    assert smtp_starttls.auth_attempts == 1


async def test_implicit_tls_login_ok(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(endpoint(smtp_tls.port, Security.TLS), probe_settings)

    assert result.ok, result.message
    assert result.tls is not None and result.tls.trusted
    assert set(result.auth_mechanisms) == {"PLAIN", "LOGIN"}


async def test_plaintext_login_ok(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with SmtpServer(SmtpMode.PLAIN, USERS) as server:
        result = await probe_smtp(endpoint(server.port, Security.NONE), probe_settings)
    assert result.ok, result.message
    assert result.tls is None


async def test_wrong_password_is_refused_after_one_login(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    logins_before = smtp_starttls.auth_attempts
    result = await probe_smtp(
        endpoint(smtp_starttls.port, Security.STARTTLS, password="nope"), probe_settings
    )

    assert result.code is ProbeCode.AUTH_FAILED
    assert result.field == "smtp.password"
    assert not result.ok and not result.transient
    assert "535" in result.message  # the server's refusal, not a timeout
    assert smtp_starttls.auth_attempts - logins_before == 1  # and no second try
    assert result.tls is not None and result.tls.trusted  # TLS facts survive the failure


async def test_wrong_password_with_gmail_explains_app_passwords(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(
        endpoint(smtp_tls.port, Security.TLS, password="nope"), probe_settings, provider="GMAIL"
    )
    assert result.code is ProbeCode.AUTH_FAILED
    assert result.hint == app_password_hint(Provider.GMAIL)
    assert result.hint is not None and "app password" in result.hint


async def test_unknown_user_is_auth_failed(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(
        endpoint(smtp_tls.port, Security.TLS, username="eve@x"), probe_settings
    )
    assert result.code is ProbeCode.AUTH_FAILED


async def test_closed_port(endpoint: EndpointFactory, probe_settings: ProbeSettings) -> None:
    result = await probe_smtp(endpoint(closed_port(), Security.STARTTLS), probe_settings)
    assert result.code is ProbeCode.CONNECTION_REFUSED
    assert result.field == "smtp.port"
    assert result.transient


async def test_implicit_tls_against_starttls_port_names_the_fix(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(endpoint(smtp_starttls.port, Security.TLS), probe_settings)

    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert result.field == "smtp.security"
    assert result.hint is not None
    assert "STARTTLS" in result.hint and "465" in result.hint
    assert str(smtp_starttls.port) in result.hint


async def test_starttls_against_implicit_tls_port_names_the_fix(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(endpoint(smtp_tls.port, Security.STARTTLS), probe_settings)

    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert result.field == "smtp.security"
    assert result.hint is not None and "set security to TLS" in result.hint
    assert "port 587 for STARTTLS" in result.hint


async def test_server_without_starttls(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with SmtpServer(SmtpMode.PLAIN_NO_AUTH, USERS) as server:
        result = await probe_smtp(endpoint(server.port, Security.STARTTLS), probe_settings)
        assert server.auth_attempts == 0
    assert result.code is ProbeCode.STARTTLS_UNSUPPORTED
    assert result.field == "smtp.security"


async def test_plaintext_without_auth_is_refused(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with SmtpServer(SmtpMode.PLAIN_NO_AUTH, USERS) as server:
        result = await probe_smtp(endpoint(server.port, Security.NONE), probe_settings)
    assert result.code is ProbeCode.PLAINTEXT_AUTH_REFUSED
    assert result.field == "smtp.security"


async def test_loopback_refused_by_default(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    strict = ProbeSettings(
        connect_timeout=probe_settings.connect_timeout,
        overall_timeout=probe_settings.overall_timeout,
        network=NetworkPolicy(),
        ca_file=probe_settings.ca_file,
    )
    result = await probe_smtp(endpoint(smtp_tls.port, Security.TLS), strict)

    assert result.code is ProbeCode.HOST_NOT_ALLOWED
    assert result.field == "smtp.host"
    assert (
        result.message == "This host is not allowed: inboxd only connects to public mail servers."
    )
    assert smtp_tls.auth_attempts == 0


async def test_port_not_in_allow_list(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    policy = NetworkPolicy(allow_private_hosts=True, allowed_ports=frozenset({465, 587}))
    strict = ProbeSettings(connect_timeout=1, overall_timeout=3, network=policy)
    result = await probe_smtp(endpoint(smtp_tls.port, Security.TLS), strict)
    assert result.code is ProbeCode.HOST_NOT_ALLOWED
    assert result.field == "smtp.port"


async def test_hostname_is_used_for_certificate_checks(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    # The certificate names only "localhost": connecting by that name verifies even though
    # the socket goes to 127.0.0.1, while the bare IP does not match it.
    with SmtpServer(SmtpMode.TLS, USERS, ssl_context=certs.localhost_only_context) as server:
        by_name = await probe_smtp(
            endpoint(server.port, Security.TLS, host="localhost"), probe_settings
        )
        by_ip = await probe_smtp(
            endpoint(server.port, Security.TLS, host="127.0.0.1"), probe_settings
        )
        assert server.auth_attempts == 1
    assert by_name.ok, by_name.message
    assert by_ip.code is ProbeCode.CERTIFICATE_UNTRUSTED
    assert "127.0.0.1" in by_ip.message or "mismatch" in by_ip.message.lower()


async def test_plaintext_against_starttls_server_suggests_starttls(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(endpoint(smtp_starttls.port, Security.NONE), probe_settings)
    assert result.code is ProbeCode.PLAINTEXT_AUTH_REFUSED
    assert result.hint is not None and "STARTTLS" in result.hint
    assert smtp_starttls.auth_attempts == 0


def drops_on_quit(line: bytes) -> list[bytes] | None:
    """A server that accepts AUTH, then hangs up on QUIT without a reply."""
    verb = line.split(b" ", 1)[0].strip().upper()
    if verb == b"EHLO":
        return [b"250-hi\r\n", b"250 AUTH PLAIN\r\n"]
    if verb == b"AUTH":
        return [b"235 2.7.0 Authentication successful\r\n"]
    return None


async def test_failing_quit_after_login_is_still_ok(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with LineServer(b"220 terse ESMTP\r\n", drops_on_quit) as server:
        result = await probe_smtp(endpoint(server.port, Security.NONE), probe_settings)
    assert result.ok, result.message
    assert result.auth_mechanisms == ["PLAIN"]


async def test_security_given_as_plain_string(
    smtp_tls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    result = await probe_smtp(endpoint(smtp_tls.port, "TLS"), probe_settings)
    assert result.ok, result.message
