"""OAuth logins against a real Dovecot 2.3 (Debian's packages) whose ``oauth2`` passdb checks
each token at the test provider's introspection endpoint: IMAP probe (raw wire), IMAP session
(aioimaplib: receiving, the Sent folder), submission (probe and sending), each with a good
token and a refused one. Dovecot's own XOAUTH2 / OAUTHBEARER, including its error challenge,
is the peer here. Skipped, naming the packages, where Dovecot is not installed."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import pytest

from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeSettings, Security, probe_imap, probe_smtp
from mail.roundtrip import run_round_trip
from mail.send import send_message
from mail.sent_folder import append_to_sent, find_in_sent
from tests.mail.conftest import OAUTH_USER, OAuthEndpointFactory
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.mailservers import MailCerts
from tests.support.oauth_provider import OAuthProvider

MESSAGE = (
    b"From: olga@example.test\r\nTo: olga@example.test\r\nSubject: oauth\r\n"
    b"Message-ID: <oauth.1@example.test>\r\n\r\nsent with a token\r\n"
)


@pytest.fixture(scope="module")
def dovecot(certs: MailCerts, provider: OAuthProvider) -> Iterator[Dovecot]:
    require_dovecot()
    users = {OAUTH_USER: "unused-password-1"}
    with Dovecot(users, certs, oauth2_introspection_url=provider.introspection_url) as server:
        yield server


@pytest.fixture
def session_settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=5.0,
        command_timeout=10.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


@pytest.fixture
def slow_probe(probe_settings: ProbeSettings) -> ProbeSettings:
    # Dovecot's auth process asks the provider over HTTP: more than a loopback round trip.
    return ProbeSettings(
        connect_timeout=10.0,
        overall_timeout=20.0,
        network=probe_settings.network,
        ca_file=probe_settings.ca_file,
    )


def forms(token: str) -> list[str]:
    return [token, base64.b64encode(token.encode()).decode()]


async def test_imap_probe_xoauth2_good_then_expired(
    dovecot: Dovecot,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    slow_probe: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    for security, port in (
        (Security.TLS, dovecot.imaps_port),
        (Security.STARTTLS, dovecot.imap_port),
    ):
        good = await probe_imap(oauth_endpoint(port, security, token), slow_probe)
        assert good.ok, good.message
        assert {"XOAUTH2", "OAUTHBEARER"} <= set(good.auth_mechanisms)
    provider.expire_access_token(token)
    bad = await probe_imap(oauth_endpoint(dovecot.imaps_port, Security.TLS, token), slow_probe)
    assert bad.code is ProbeCode.TOKEN_REJECTED, bad.message
    assert bad.hint and "connect the account again" in bad.hint
    for text in (bad.message, bad.hint, repr(bad)):
        assert all(form not in text for form in forms(token))


async def test_submission_probe_and_sending_with_a_token(
    dovecot: Dovecot,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    slow_probe: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token
    endpoint = oauth_endpoint(dovecot.submission_port, Security.STARTTLS, token)
    probe = await probe_smtp(endpoint, slow_probe)
    assert probe.ok, probe.message
    sent = await send_message(
        endpoint, slow_probe, envelope_from=OAUTH_USER, recipients=[OAUTH_USER], data=MESSAGE
    )
    assert sent.accepted, sent.reply

    provider.revoke_user(OAUTH_USER)
    refused = await probe_smtp(endpoint, slow_probe)
    assert refused.code is ProbeCode.TOKEN_REJECTED, refused.message
    not_sent = await send_message(
        endpoint, slow_probe, envelope_from=OAUTH_USER, recipients=[OAUTH_USER], data=MESSAGE
    )
    assert not not_sent.accepted and not_sent.permanent
    assert not_sent.login_code is ProbeCode.TOKEN_REJECTED
    for text in (refused.message, refused.hint or "", not_sent.reply, not_sent.hint or ""):
        assert all(form not in text for form in forms(token))


async def test_imap_session_and_sent_folder_with_a_token(
    dovecot: Dovecot,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    session_settings: SessionSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # aioimaplib logs every line it sends at DEBUG
    token = provider.issue_tokens(OAUTH_USER).access_token
    endpoint = oauth_endpoint(dovecot.imap_port, Security.STARTTLS, token)
    session = await ImapSession.open(endpoint, session_settings)
    try:
        mailbox = await session.examine("INBOX")
        assert mailbox.uidvalidity > 0
    finally:
        await session.close()
    assert await append_to_sent(endpoint, session_settings, MESSAGE) == "Sent"
    assert await find_in_sent(endpoint, session_settings, "<oauth.1@example.test>") is True

    provider.expire_access_token(token)
    with pytest.raises(ImapSessionError) as refused:
        await ImapSession.open(endpoint, session_settings)
    assert refused.value.code == ProbeCode.TOKEN_REJECTED.value
    assert refused.value.auth
    assert await append_to_sent(endpoint, session_settings, MESSAGE) is None
    client_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("uvicorn")]
    assert any(r.name.startswith("aioimaplib") for r in caplog.records)  # the check sees them
    for text in (str(refused.value), repr(refused.value), refused.value.hint or "", *client_logs):
        assert all(form not in text for form in forms(token))


async def test_round_trip_test_email_with_tokens_on_both_sides(
    dovecot: Dovecot,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    slow_probe: ProbeSettings,
) -> None:
    token = provider.issue_tokens(OAUTH_USER).access_token  # a new grant, after any revocation
    result = await run_round_trip(
        oauth_endpoint(dovecot.submission_port, Security.STARTTLS, token),
        oauth_endpoint(dovecot.imaps_port, Security.TLS, token),
        from_address=OAUTH_USER,
        to_address=OAUTH_USER,
        smtp_settings=slow_probe,
        imap_settings=slow_probe,
        receive_timeout=30.0,
        poll_interval=0.2,
    )
    assert result.ok, result.message
    assert result.received is True and result.deleted
    text = json.dumps(result.to_dict())
    assert all(form not in text for form in forms(token))


async def test_oauthbearer_against_dovecot(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    slow_probe: ProbeSettings,
) -> None:
    """Dovecot's OAUTHBEARER is the reference for the RFC 7628 client response and its
    error exchange, on IMAP and submission."""
    require_dovecot()
    with Dovecot(
        {OAUTH_USER: "unused-password-1"},
        certs,
        oauth2_introspection_url=provider.introspection_url,
        oauth2_mechanisms=("oauthbearer",),
    ) as server:
        token = provider.issue_tokens(OAUTH_USER).access_token
        imap = oauth_endpoint(server.imaps_port, Security.TLS, token)
        submission = oauth_endpoint(server.submission_port, Security.STARTTLS, token)
        good = [await probe_imap(imap, slow_probe), await probe_smtp(submission, slow_probe)]
        provider.expire_access_token(token)
        bad = [await probe_imap(imap, slow_probe), await probe_smtp(submission, slow_probe)]
    for result in good:
        assert result.ok, result.message
        assert "XOAUTH2" not in result.auth_mechanisms
        assert "OAUTHBEARER" in result.auth_mechanisms
    for result in bad:
        assert result.code is ProbeCode.TOKEN_REJECTED, result.message
        assert "invalid_token" in result.message  # Dovecot's JSON error, answered with %x01
        assert all(form not in json.dumps(result.to_dict()) for form in forms(token))
