"""SMTP with an OAuth access token (XOAUTH2, OAUTHBEARER) against an aiosmtpd that checks the
token with the test provider over HTTP: the probe, sending, and what a refusal looks like."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from mail.probes import ProbeCode, ProbeSettings, Security, probe_smtp
from mail.send import send_message
from tests.mail.conftest import OAUTH_USER, USER, USERS, OAuthEndpointFactory
from tests.support.mailservers import MailCerts, SmtpMode
from tests.support.oauth_mail import OAuthSmtpServer
from tests.support.oauth_provider import OAuthProvider

MESSAGE = b"From: olga@example.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def oauth_smtp(certs: MailCerts, provider: OAuthProvider) -> Iterator[OAuthSmtpServer]:
    with OAuthSmtpServer(SmtpMode.STARTTLS, provider, ssl_context=certs.server_context) as server:
        yield server


async def test_xoauth2_with_a_good_token_logs_in(
    oauth_smtp: OAuthSmtpServer,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    result = await probe_smtp(
        oauth_endpoint(oauth_smtp.port, Security.STARTTLS, token), probe_settings
    )
    assert result.ok, result.message
    assert set(result.auth_mechanisms) == {"XOAUTH2", "OAUTHBEARER"}
    assert oauth_smtp.oauth_attempts == ["XOAUTH2"]


async def test_expired_token_is_token_rejected_after_the_empty_answer(
    oauth_smtp: OAuthSmtpServer,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    provider.expire_access_token(token)
    result = await probe_smtp(
        oauth_endpoint(oauth_smtp.port, Security.STARTTLS, token), probe_settings
    )
    assert result.code is ProbeCode.TOKEN_REJECTED
    assert "535" in result.message
    assert result.hint and "connect the account again" in result.hint
    assert oauth_smtp.acks == [b""]  # the error challenge answered as Google specifies
    assert oauth_smtp.oauth_attempts == ["XOAUTH2"]  # no retry, no password mechanism


async def test_token_for_another_user_is_rejected(
    oauth_smtp: OAuthSmtpServer,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens("someone-else@example.test").access_token
    result = await probe_smtp(
        oauth_endpoint(oauth_smtp.port, Security.STARTTLS, token), probe_settings
    )
    assert result.code is ProbeCode.TOKEN_REJECTED


async def test_oauthbearer_when_the_server_offers_only_that(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    with OAuthSmtpServer(
        SmtpMode.TLS, provider, ssl_context=certs.server_context, mechanisms=["OAUTHBEARER"]
    ) as server:
        token = provider.issue_tokens(OAUTH_USER).access_token
        good = await probe_smtp(oauth_endpoint(server.port, Security.TLS, token), probe_settings)
        provider.expire_access_token(token)
        bad = await probe_smtp(oauth_endpoint(server.port, Security.TLS, token), probe_settings)
    assert good.ok, good.message
    assert good.auth_mechanisms == ["OAUTHBEARER"]
    assert bad.code is ProbeCode.TOKEN_REJECTED
    assert "invalid_token" in bad.message  # the status of the server's JSON challenge
    assert server.oauth_attempts == ["OAUTHBEARER", "OAUTHBEARER"]
    assert server.acks == [b"\x01"]  # RFC 7628 section 3.2.3


async def test_never_falls_back_to_a_password_mechanism(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    with OAuthSmtpServer(
        SmtpMode.STARTTLS,
        provider,
        ssl_context=certs.server_context,
        mechanisms=["PLAIN", "LOGIN"],
        users=USERS,
    ) as server:
        token = provider.issue_tokens(OAUTH_USER).access_token
        result = await probe_smtp(
            oauth_endpoint(server.port, Security.STARTTLS, token), probe_settings
        )
    assert result.code is ProbeCode.PROTOCOL_ERROR
    assert "XOAUTH2" in result.message and result.hint
    assert server.auth_attempts == 0  # the token went nowhere


async def test_sending_with_xoauth2(
    oauth_smtp: OAuthSmtpServer,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    endpoint = oauth_endpoint(oauth_smtp.port, Security.STARTTLS, token)
    sent = await send_message(
        endpoint, probe_settings, envelope_from=OAUTH_USER, recipients=[USER], data=MESSAGE
    )
    assert sent.accepted, sent.reply
    [message] = oauth_smtp.wait_for_messages(1)
    assert message.login == OAUTH_USER

    provider.expire_access_token(token)
    refused = await send_message(
        endpoint, probe_settings, envelope_from=OAUTH_USER, recipients=[USER], data=MESSAGE
    )
    assert not refused.accepted
    assert refused.code == 535 and refused.permanent
    assert refused.login_code is ProbeCode.TOKEN_REJECTED  # the caller refreshes, once
    assert sent.login_code is None
    for text in (refused.reply, refused.hint or "", repr(refused)):
        assert token not in text
        assert base64.b64encode(token.encode()).decode() not in text
