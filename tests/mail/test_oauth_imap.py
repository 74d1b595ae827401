"""IMAP with an OAuth access token against servers Dovecot does not imitate: OAUTHBEARER only,
no SASL-IR, no OAuth at all, plaintext. The probe (raw wire) and the session (aioimaplib)
both; tokens are checked at the test provider over HTTP (tests.support.oauth_mail)."""

from __future__ import annotations

import pytest

from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeSettings, Security, probe_imap
from tests.mail.conftest import OAUTH_USER, OAuthEndpointFactory
from tests.support.mailservers import MailCerts
from tests.support.oauth_mail import OAuthImapServer
from tests.support.oauth_provider import OAuthProvider


@pytest.fixture
def session_settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=5.0,
        command_timeout=10.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


def authenticate_lines(server: OAuthImapServer) -> list[bytes]:
    return [line for line in server.received if b" AUTHENTICATE " in line.upper()]


@pytest.mark.parametrize("sasl_ir", [True, False])
async def test_probe_xoauth2_with_and_without_sasl_ir(
    sasl_ir: bool,
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    with OAuthImapServer(provider, sasl_ir=sasl_ir, ssl_context=certs.server_context) as server:
        result = await probe_imap(oauth_endpoint(server.port, Security.TLS, token), probe_settings)
    assert result.ok, result.message
    assert result.message_count == 0
    assert server.oauth_attempts == ["XOAUTH2"]
    [command] = authenticate_lines(server)
    # Without SASL-IR the response waits for the server's "+": not on the command line.
    assert (len(command.split()) == 4) is sasl_ir
    assert not any(b"LOGIN " in line.upper() for line in server.received)


async def test_probe_refused_xoauth2_answers_the_challenge_and_reports_the_status(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    provider.expire_access_token(token)
    with OAuthImapServer(provider, ssl_context=certs.server_context) as server:
        result = await probe_imap(oauth_endpoint(server.port, Security.TLS, token), probe_settings)
    assert result.code is ProbeCode.TOKEN_REJECTED
    assert "status 401" in result.message and "AUTHENTICATIONFAILED" in result.message
    assert server.acks == [b""]
    assert server.oauth_attempts == ["XOAUTH2"]  # once: no retry, no LOGIN


async def test_probe_oauthbearer_when_the_server_offers_only_that(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    with OAuthImapServer(
        provider, mechanisms=["OAUTHBEARER"], ssl_context=certs.server_context
    ) as server:
        endpoint = oauth_endpoint(server.port, Security.TLS, token)
        good = await probe_imap(endpoint, probe_settings)
        provider.expire_access_token(token)
        bad = await probe_imap(endpoint, probe_settings)
    assert good.ok, good.message
    assert good.auth_mechanisms == ["OAUTHBEARER"]
    assert bad.code is ProbeCode.TOKEN_REJECTED
    assert "invalid_token" in bad.message
    assert server.acks == [b"\x01"]  # RFC 7628 section 3.2.3


async def test_probe_refuses_a_server_without_oauth(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    with OAuthImapServer(provider, mechanisms=["PLAIN"], ssl_context=certs.server_context) as srv:
        result = await probe_imap(oauth_endpoint(srv.port, Security.TLS, token), probe_settings)
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert "XOAUTH2" in result.message and result.hint
    assert authenticate_lines(srv) == []  # the token never left
    assert not any(b"LOGIN " in line.upper() for line in srv.received)


async def test_plaintext_only_when_security_is_none(
    provider: OAuthProvider, oauth_endpoint: OAuthEndpointFactory, probe_settings: ProbeSettings
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    with OAuthImapServer(provider) as server:
        result = await probe_imap(oauth_endpoint(server.port, Security.NONE, token), probe_settings)
        refused = await probe_imap(
            oauth_endpoint(server.port, Security.STARTTLS, token), probe_settings
        )
    assert result.ok, result.message
    assert refused.code is ProbeCode.STARTTLS_UNSUPPORTED
    assert len(authenticate_lines(server)) == 1  # none for the STARTTLS attempt


@pytest.mark.parametrize("mechanisms", [["XOAUTH2"], ["OAUTHBEARER"]])
async def test_session_without_sasl_ir_logs_in_and_reports_a_refusal(
    mechanisms: list[str],
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    session_settings: SessionSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    with OAuthImapServer(
        provider, mechanisms=mechanisms, sasl_ir=False, ssl_context=certs.server_context
    ) as server:
        endpoint = oauth_endpoint(server.port, Security.TLS, token)
        session = await ImapSession.open(endpoint, session_settings)
        try:
            assert (await session.examine("INBOX")).uidvalidity == 7
        finally:
            await session.close()
        provider.expire_access_token(token)
        with pytest.raises(ImapSessionError) as refused:
            await ImapSession.open(endpoint, session_settings)
    assert refused.value.code == ProbeCode.TOKEN_REJECTED.value and refused.value.auth
    # Answered, so the server ended the exchange (a hang would be a timeout, not this code).
    assert server.acks == [b"" if mechanisms == ["XOAUTH2"] else b"\x01"]
    assert token not in str(refused.value) and token not in repr(refused.value)
