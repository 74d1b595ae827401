"""One SMTP transaction through an inbox's server (issue 13): what is accepted, what is
refused for good (5xx, with a hint) and what may be tried again (4xx, timeouts, broken
connections), against aiosmtpd and scripted servers on 127.0.0.1. No outcome ever holds the
password, even when the server echoes it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import pytest

from mail.probes import ProbeSettings, Security
from mail.send import SendOutcome, send_message
from tests.mail.conftest import PASSWORD, USER, USERS, EndpointFactory
from tests.support.mailservers import LineServer, MailCerts, SmtpMode, SmtpServer, closed_port

BOB = "bob@example.test"
ERIN = "erin@example.test"
DATA = (
    b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <send.1@example.test>\r\n\r\nHello.\r\n"
)
SECRET_FORMS = (
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
)


def no_password(outcome: SendOutcome) -> SendOutcome:
    text = repr(outcome)
    for form in SECRET_FORMS:
        assert form not in text
    assert "leak" not in text  # any readable piece of the canary
    return outcome


async def send(
    endpoint: EndpointFactory,
    settings: ProbeSettings,
    port: int,
    security: Security = Security.STARTTLS,
    *,
    recipients: Sequence[str] = (BOB,),
    data: bytes = DATA,
    password: str = PASSWORD,
) -> SendOutcome:
    outcome = await send_message(
        endpoint(port, security, password=password),
        settings,
        envelope_from=USER,
        recipients=list(recipients),
        data=data,
    )
    return no_password(outcome)


async def test_an_accepted_message_carries_the_servers_reply(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    outcome = await send(endpoint, probe_settings, smtp_starttls.port)
    assert outcome == SendOutcome(
        accepted=True,
        permanent=False,
        code=250,
        reply="Message accepted for delivery",
        hint=None,
        refused={},
    )
    [received] = smtp_starttls.messages
    assert (received.login, received.mail_from, received.rcpt_tos) == (USER, USER, [BOB])
    assert received.data == DATA


async def test_recipients_refused_beside_accepted_ones_are_listed(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    smtp_starttls.rcpt_replies[ERIN] = "550 5.1.1 No such user here"
    outcome = await send(endpoint, probe_settings, smtp_starttls.port, recipients=[BOB, ERIN])
    assert outcome.accepted and not outcome.permanent
    assert outcome.refused == {ERIN: "550 5.1.1 No such user here"}
    assert smtp_starttls.messages[0].rcpt_tos == [BOB]


async def test_every_recipient_refused_for_good_is_permanent_with_a_hint(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    smtp_starttls.rcpt_replies[BOB] = "550 5.1.1 No such user here"
    outcome = await send(endpoint, probe_settings, smtp_starttls.port)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, True, 550)
    assert outcome.reply == f"{BOB}: 5.1.1 No such user here"
    assert outcome.hint is not None and "recipient" in outcome.hint
    assert smtp_starttls.messages == []


@pytest.mark.parametrize("where", ["rcpt", "data"])
async def test_a_451_may_be_tried_again(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    where: str,
) -> None:
    reply = "451 4.3.0 Greylisted, try again later"
    if where == "rcpt":
        smtp_starttls.rcpt_replies[BOB] = reply
    else:
        smtp_starttls.data_reply = reply
    outcome = await send(endpoint, probe_settings, smtp_starttls.port)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, False, 451)
    assert "Greylisted" in outcome.reply and outcome.hint is None


@pytest.mark.parametrize(
    ("reply", "hint"),
    [
        ("554 5.7.1 Message rejected as spam", "policy"),
        ("552 5.3.4 Message size exceeds fixed limit", "smaller"),
    ],
)
async def test_a_5xx_after_data_is_permanent_with_a_hint(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    reply: str,
    hint: str,
) -> None:
    smtp_starttls.data_reply = reply
    outcome = await send(endpoint, probe_settings, smtp_starttls.port)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, True, int(reply[:3]))
    assert outcome.reply == reply[4:]
    assert outcome.hint is not None and hint in outcome.hint


async def test_a_message_over_the_servers_size_is_permanent(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    big = DATA + b"x" * 5000 + b"\r\n"
    with SmtpServer(
        SmtpMode.STARTTLS, USERS, ssl_context=certs.server_context, size_limit=2000
    ) as server:
        outcome = await send(endpoint, probe_settings, server.port, data=big)
    assert (outcome.accepted, outcome.permanent) == (False, True)
    assert "2000" in outcome.reply
    assert outcome.hint is not None and "smaller" in outcome.hint
    assert server.messages == []


async def test_a_refused_login_is_permanent_and_says_check_the_password(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    outcome = await send(endpoint, probe_settings, smtp_starttls.port, password=PASSWORD + "x")
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, True, 535)
    assert outcome.hint is not None and "password" in outcome.hint
    assert smtp_starttls.messages == []


async def test_an_untrusted_certificate_is_permanent(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=certs.untrusted_context) as server:
        outcome = await send(endpoint, probe_settings, server.port)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, True, None)
    assert outcome.hint
    assert server.auth_attempts == 0


async def test_a_server_without_smtputf8_refuses_a_non_ascii_address_for_good(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    outcome = await send(endpoint, probe_settings, smtp_starttls.port, recipients=["jörg@x.test"])
    assert (outcome.accepted, outcome.permanent) == (False, True)
    assert "SMTPUTF8" in outcome.reply


async def test_nothing_listening_may_be_tried_again(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    outcome = await send(endpoint, probe_settings, closed_port())
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, False, None)


def scripted_smtp(
    end_of_data: Callable[[str], Sequence[bytes] | None], *, drop_in_data: bool = False
) -> Callable[[bytes], Sequence[bytes] | None]:
    """A plaintext SMTP server taking AUTH PLAIN; ``end_of_data`` answers the final "." with
    the password it was sent (None hangs up); ``drop_in_data`` hangs up on the first line."""
    state = {"data": False, "password": ""}

    def respond(line: bytes) -> Sequence[bytes] | None:
        command = line.strip()
        if state["data"]:
            if drop_in_data:
                return None
            if command == b".":
                state["data"] = False
                return end_of_data(state["password"])
            return []
        verb = command.split(b" ", 1)[0].upper()
        if verb == b"EHLO":
            return [b"250-localhost\r\n", b"250 AUTH PLAIN\r\n"]
        if verb == b"AUTH":
            state["password"] = base64.b64decode(command.split()[-1]).split(b"\0")[2].decode()
            return [b"235 2.7.0 Authentication successful\r\n"]
        if verb in (b"MAIL", b"RCPT", b"RSET"):
            return [b"250 OK\r\n"]
        if verb == b"DATA":
            state["data"] = True
            return [b"354 End data with <CR><LF>.<CR><LF>\r\n"]
        return None  # QUIT and anything else: hang up

    return respond


async def test_a_connection_dropped_mid_data_may_be_tried_again(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    respond = scripted_smtp(lambda _: [b"250 OK\r\n"], drop_in_data=True)
    with LineServer(b"220 localhost ESMTP\r\n", respond) as server:
        outcome = await send(endpoint, probe_settings, server.port, Security.NONE)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, False, None)
    assert any(line.upper().startswith(b"DATA") for line in server.received)


async def test_no_reply_to_the_message_may_be_tried_again(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with LineServer(b"220 localhost ESMTP\r\n", scripted_smtp(lambda _: [])) as server:
        outcome = await send(endpoint, probe_settings, server.port, Security.NONE)
    assert (outcome.accepted, outcome.permanent, outcome.code) == (False, False, None)
    assert "answer" in outcome.reply or "finish" in outcome.reply


async def test_a_password_the_server_echoes_never_reaches_the_outcome(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    def echo(password: str) -> Sequence[bytes]:
        encoded = base64.b64encode(password.encode()).decode()
        return [f"554 5.7.1 Refused: password {password} ({encoded})\r\n".encode()]

    with LineServer(b"220 localhost ESMTP\r\n", scripted_smtp(echo)) as server:
        outcome = await send(endpoint, probe_settings, server.port, Security.NONE)
    assert (outcome.permanent, outcome.code) == (True, 554)
    assert outcome.reply.startswith("5.7.1 Refused: password ***")  # no_password checked it
