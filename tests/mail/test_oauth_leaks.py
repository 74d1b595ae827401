"""No text of any OAuth login outcome holds the access token, in any form a server might echo
(plain, base64, inside the XOAUTH2 or OAUTHBEARER response), and neither does what the client
libraries log, whatever the server does: accept, refuse, echo the credential back, or put it
in its error challenge."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Sequence

import pytest

from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeCode, ProbeResult, ProbeSettings, Security, probe_imap, probe_smtp
from mail.send import SendOutcome, send_message
from tests.mail.conftest import OAUTH_USER, OAuthEndpointFactory
from tests.support.mailservers import LineServer, MailCerts, SmtpMode, closed_port
from tests.support.oauth_mail import OAuthImapServer, OAuthSmtpServer
from tests.support.oauth_provider import OAuthProvider

Script = Callable[[bytes], Sequence[bytes] | None]
# Loggers of the test's own servers, which see the token by design (aiosmtpd's is "mail.log").
SERVER_LOGGERS = ("mail.log", "uvicorn", "pymap", "httpx", "httpcore")


def token_forms(token: str, port: int) -> list[str]:
    xoauth2 = f"user={OAUTH_USER}\x01auth=Bearer {token}\x01\x01"
    bearer = f"n,a={OAUTH_USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return [
        token,
        base64.b64encode(token.encode()).decode(),
        base64.b64encode(xoauth2.encode()).decode(),
        base64.b64encode(bearer.encode()).decode(),
    ]


def texts_of(outcome: ProbeResult | SendOutcome | ImapSessionError) -> list[str]:
    if isinstance(outcome, ProbeResult):
        return [json.dumps(outcome.to_dict()), repr(outcome)]
    if isinstance(outcome, SendOutcome):
        return [repr(outcome), outcome.reply, outcome.hint or ""]
    return [str(outcome), repr(outcome), outcome.hint or ""]


def smtp_echo(mechanism: bytes) -> Script:
    def respond(line: bytes) -> Sequence[bytes] | None:
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"EHLO":
            return [b"250-echo\r\n", b"250 AUTH " + mechanism + b"\r\n"]
        if verb == b"QUIT":
            return None
        return [b"535 you sent " + line.strip() + b"\r\n"]

    return respond


def imap_echo(token: str) -> Script:
    """Echoes the AUTHENTICATE line in its NO, after an error challenge holding the token."""
    challenge = base64.b64encode(json.dumps({"status": token}).encode())
    refusal: list[bytes] = []

    def respond(line: bytes) -> Sequence[bytes] | None:
        tag, _, rest = line.strip().partition(b" ")
        if rest.upper().startswith(b"CAPABILITY"):
            caps = b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 SASL-IR\r\n"
            return [caps, tag + b" OK done\r\n"]
        if rest.upper().startswith(b"AUTHENTICATE"):
            refusal.append(tag + b" NO you sent " + rest + b"\r\n")
            return [b"+ " + challenge + b"\r\n"]
        if rest.upper().startswith(b"LOGOUT"):
            return None
        if not tag.isalnum() or not rest:  # the answer to the challenge
            return [refusal.pop()]
        return [tag + b" NO you sent " + rest + b"\r\n"]

    return respond


async def test_no_token_in_any_outcome_or_client_log(
    certs: MailCerts,
    provider: OAuthProvider,
    oauth_endpoint: OAuthEndpointFactory,
    probe_settings: ProbeSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    session_settings = SessionSettings(
        connect_timeout=5.0,
        command_timeout=10.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )
    good = provider.issue_tokens(OAUTH_USER).access_token
    bad = provider.issue_tokens(OAUTH_USER).access_token
    provider.expire_access_token(bad)
    outcomes: list[tuple[str, int, ProbeResult | SendOutcome | ImapSessionError]] = []

    async def all_of(port: int, security: Security, *, session: bool = False) -> None:
        for token in (good, bad):
            endpoint = oauth_endpoint(port, security, token)
            if session:
                try:
                    await (await ImapSession.open(endpoint, session_settings)).close()
                except ImapSessionError as exc:
                    outcomes.append((token, port, exc))
                outcomes.append((token, port, await probe_imap(endpoint, probe_settings)))
                continue
            outcomes.append((token, port, await probe_smtp(endpoint, probe_settings)))
            sent = await send_message(
                endpoint,
                probe_settings,
                envelope_from=OAUTH_USER,
                recipients=[OAUTH_USER],
                data=b"Subject: t\r\n\r\nx\r\n",
            )
            outcomes.append((token, port, sent))

    for mechanisms in (["XOAUTH2"], ["OAUTHBEARER"]):
        with OAuthSmtpServer(
            SmtpMode.TLS, provider, ssl_context=certs.server_context, mechanisms=mechanisms
        ) as smtp:
            await all_of(smtp.port, Security.TLS)
        with OAuthImapServer(
            provider, mechanisms=mechanisms, ssl_context=certs.server_context
        ) as imap:
            await all_of(imap.port, Security.TLS, session=True)
    for mechanism in (b"XOAUTH2", b"OAUTHBEARER"):
        with LineServer(b"220 echo ESMTP\r\n", smtp_echo(mechanism)) as echo:
            await all_of(echo.port, Security.NONE)
    with LineServer(b"* OK echo\r\n", imap_echo(bad)) as echo:
        await all_of(echo.port, Security.NONE, session=True)
    await all_of(closed_port(), Security.TLS)

    codes = {getattr(o, "code", None) for _, _, o in outcomes}
    assert {ProbeCode.OK, ProbeCode.TOKEN_REJECTED, ProbeCode.CONNECTION_REFUSED} <= codes
    assert any("***" in text for _, _, o in outcomes for text in texts_of(o))  # echo blanked
    logged = [r.getMessage() for r in caplog.records if not r.name.startswith(SERVER_LOGGERS)]
    assert any("AUTHENTICATE" in line for line in logged)  # aioimaplib's lines are seen
    for token, port, outcome in outcomes:
        for text in [*texts_of(outcome), *logged]:
            for form in token_forms(token, port):
                assert form not in text, (outcome, form)
