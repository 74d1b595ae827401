"""run_round_trip against real SMTP and IMAP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator, Sequence
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from mail.probes import ProbeSettings, Security
from mail.roundtrip import SUBJECT, TEST_HEADER, RoundTripResult, run_round_trip
from tests.mail.conftest import PASSWORD, USER, USERS, EndpointFactory
from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    LineServer,
    MailCerts,
    ReceivedMessage,
    SmtpMode,
    SmtpServer,
    closed_port,
    deliver_to,
)

BOB = "bob@example.test"
SECRET_FORMS = [
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    PASSWORD.replace("\\", "\\\\").replace('"', '\\"'),  # as an IMAP quoted string
]
MESSAGE_ID = re.compile(r"^<inboxd-test\.[0-9a-f]{32}@example\.test>$")


def assert_no_secret(result: RoundTripResult) -> None:
    for text in (json.dumps(result.to_dict()), repr(result), str(result)):
        for form in SECRET_FORMS:
            assert form not in text


def parsed(message: ReceivedMessage) -> EmailMessage:
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture
def imap_server(certs: MailCerts) -> Iterator[ImapServer]:
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as server:
        yield server


def smtp_server(
    certs: MailCerts, mode: SmtpMode, imap: ImapServer | None, route: Callable[[str], str | None]
) -> SmtpServer:
    on_message = deliver_to(imap, route) if imap is not None else None
    return SmtpServer(mode, USERS, ssl_context=certs.server_context, on_message=on_message)


def known_user(address: str) -> str | None:
    """Deliver case-insensitively, as real mail servers do."""
    lowered = address.lower()
    return lowered if lowered in USERS else None


@pytest.mark.parametrize(
    ("mode", "security"), [(SmtpMode.STARTTLS, Security.STARTTLS), (SmtpMode.TLS, Security.TLS)]
)
async def test_message_to_itself_is_received_then_deleted(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    imap_server: ImapServer,
    mode: SmtpMode,
    security: Security,
) -> None:
    # The user's own mail, with a similar header: the search must not match it.
    imap_server.deliver(USER, f"Subject: {SUBJECT}\r\n{TEST_HEADER}: 0\r\n\r\nmine\r\n".encode())
    with smtp_server(certs, mode, imap_server, known_user) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, security),
            endpoint(imap_server.port, Security.TLS),
            from_address=USER,
            to_address=USER.upper(),  # the same mailbox, differently spelt
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
            receive_timeout=5.0,
            poll_interval=0.1,
            from_name="Alice\r\nBcc: eve@example.test",
        )
        sent = smtp.wait_for_messages(1)

    assert result.ok, result.message
    assert result.code == "OK"
    assert result.sent and result.received is True and result.deleted
    assert result.delay_ms is not None and result.delay_ms >= 0
    assert result.field is None and result.hint is None
    assert MESSAGE_ID.match(result.message_id)
    assert imap_server.message_count(USER) == 1  # found, then expunged; the user's mail kept

    assert len(sent) == 1 and sent[0].login == USER
    assert sent[0].mail_from == USER and sent[0].rcpt_tos == [USER.upper()]
    message = parsed(sent[0])
    assert message["Subject"] == SUBJECT
    assert message["Message-ID"] == result.message_id
    assert re.fullmatch(r"[0-9a-f]{32}", message[TEST_HEADER])
    assert message["Date"] is not None
    assert message["To"] == USER.upper()
    # The display name cannot smuggle in a header.
    assert message["From"].addresses[0].display_name == "Alice Bcc: eve@example.test"
    assert message["From"].addresses[0].addr_spec == USER
    assert message["Bcc"] is None
    assert_no_secret(result)
    assert RoundTripResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


async def test_not_received_when_mailboxes_differ(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    imap_server: ImapServer,
) -> None:
    receive_timeout = 1.5
    with smtp_server(certs, SmtpMode.STARTTLS, None, known_user) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, Security.STARTTLS),
            endpoint(imap_server.port, Security.TLS),
            from_address=USER,
            to_address=USER,
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
            receive_timeout=receive_timeout,
            poll_interval=0.3,
        )
        assert len(smtp.messages) == 1

    assert not result.ok
    assert result.code == "NOT_RECEIVED"
    assert result.sent and result.received is False and not result.deleted
    assert result.delay_ms is None
    assert result.message == "Sent but not received within 1.5 s."
    assert result.hint and "spam" in result.hint and "timeout" in result.hint
    assert_no_secret(result)


async def test_wrong_smtp_password_sends_nothing(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    imap_server: ImapServer,
) -> None:
    with smtp_server(certs, SmtpMode.STARTTLS, imap_server, known_user) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, Security.STARTTLS, password="wrong-" + PASSWORD),
            endpoint(imap_server.port, Security.TLS),
            from_address=USER,
            to_address=USER,
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
            receive_timeout=5.0,
            poll_interval=0.1,
            provider="GMAIL",
        )
        assert smtp.messages == []

    assert not result.ok and not result.sent and not result.deleted
    assert result.code == "AUTH_FAILED"
    assert result.field == "smtp.password"
    assert result.hint and "app password" in result.hint
    assert imap_server.message_count(USER) == 0
    assert_no_secret(result)


async def test_wrong_imap_password_sends_nothing(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    imap_server: ImapServer,
) -> None:
    with smtp_server(certs, SmtpMode.STARTTLS, imap_server, known_user) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, Security.STARTTLS),
            endpoint(imap_server.port, Security.TLS, password="wrong-" + PASSWORD),
            from_address=USER,
            to_address=USER,
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
        )
        assert smtp.messages == []
        assert smtp.auth_attempts == 0  # IMAP is checked before anything is sent

    assert not result.ok and not result.sent
    assert result.code == "AUTH_FAILED"
    assert result.field == "imap.password"
    assert_no_secret(result)


async def test_message_to_another_address_is_not_looked_for(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    imap_server: ImapServer,
) -> None:
    with smtp_server(certs, SmtpMode.TLS, imap_server, known_user) as smtp:
        result = await run_round_trip(
            endpoint(smtp.port, Security.TLS),
            endpoint(imap_server.port, Security.TLS),
            from_address=USER,
            to_address=BOB,
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
        )
        assert [m.rcpt_tos for m in smtp.messages] == [[BOB]]

    assert result.ok, result.message
    assert result.code == "OK"
    assert result.sent and result.received is None
    assert not result.deleted and result.delay_ms is None
    assert imap_server.auth_attempts == 0  # nothing searched
    assert imap_server.message_count(BOB) == 1  # left where it landed
    assert_no_secret(result)


def echoing_smtp() -> Callable[[bytes], Sequence[bytes] | None]:
    """A plaintext SMTP server that refuses every recipient, quoting the AUTH line back."""
    auth_line = b""

    def respond(line: bytes) -> Sequence[bytes] | None:
        nonlocal auth_line
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"EHLO":
            return [b"250-echo\r\n", b"250 AUTH PLAIN LOGIN\r\n"]
        if verb == b"AUTH":
            auth_line = line.strip()
            return [b"235 ok\r\n"]
        if verb in (b"MAIL", b"RSET"):
            return [b"250 ok\r\n"]
        if verb == b"RCPT":
            return [b"550 no such user; you logged in with " + auth_line + b"\r\n"]
        return None

    return respond


async def test_refused_recipient_is_reported_without_the_password(
    endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    with LineServer(b"220 echo ready\r\n", echoing_smtp()) as server:
        result = await run_round_trip(
            endpoint(server.port, Security.NONE),
            endpoint(closed_port(), Security.TLS),  # never contacted: another address
            from_address=USER,
            to_address="nobody@example.test",
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
        )

    assert not result.ok and not result.sent and result.received is None
    assert result.code == "REJECTED_RECIPIENT"
    assert result.field == "to"
    assert "550" in result.message and "nobody@example.test" in result.message
    assert "AUTH PLAIN ***" in result.message  # the echo is quoted, the secret is not
    assert result.hint
    assert_no_secret(result)


def imap_without_uidplus(others_deleted: bool) -> Callable[[bytes], Sequence[bytes] | None]:
    """A scripted IMAP server without UIDPLUS and with a careless SEARCH that answers every
    message. Its INBOX holds the user's UID 3 (with `others_deleted`, already flagged
    \\Deleted) and the test message as UID 7."""
    state = {"token": b"", "expunged": False}

    def respond(line: bytes) -> Sequence[bytes] | None:
        tag, _, rest = line.strip().partition(b" ")
        words = rest.split()
        upper = [w.upper() for w in words]
        done = [tag + b" OK done\r\n"]
        if upper[:1] == [b"CAPABILITY"]:
            return [b"* CAPABILITY IMAP4rev1\r\n", *done]
        if upper[:1] == [b"LOGOUT"]:
            return None
        if upper[:3] == [b"UID", b"SEARCH", b"DELETED"]:
            return [b"* SEARCH 3 7\r\n" if others_deleted else b"* SEARCH 7\r\n", *done]
        if upper[:3] == [b"UID", b"SEARCH", b"HEADER"]:
            state["token"] = words[-1].strip(b'"')
            return [b"* SEARCH 3\r\n" if state["expunged"] else b"* SEARCH 3 7\r\n", *done]
        if upper[:2] == [b"UID", b"FETCH"]:
            replies = []
            for uid in words[2].split(b","):
                if uid == b"7" and state["expunged"]:
                    continue
                value = state["token"] if uid == b"7" else b"mine"
                header = b"X-Inboxd-Test: " + value + b"\r\n\r\n"
                replies.append(
                    b"* %s FETCH (UID %s BODY[HEADER.FIELDS (X-INBOXD-TEST)] {%d}\r\n%s)\r\n"
                    % (uid, uid, len(header), header)
                )
            return [*replies, *done]
        if upper[:1] == [b"EXPUNGE"]:
            state["expunged"] = True
            return [b"* 2 EXPUNGE\r\n", *done]
        return done  # LOGIN, SELECT, NOOP, UID STORE

    return respond


@pytest.mark.parametrize("others_deleted", [False, True])
async def test_only_the_test_message_is_deleted_without_uidplus(
    certs: MailCerts,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    others_deleted: bool,
) -> None:
    script = imap_without_uidplus(others_deleted)
    with (
        LineServer(b"* OK [CAPABILITY IMAP4rev1] ready\r\n", script) as imap,
        smtp_server(certs, SmtpMode.STARTTLS, None, known_user) as smtp,
    ):
        result = await run_round_trip(
            endpoint(smtp.port, Security.STARTTLS),
            endpoint(imap.port, Security.NONE),
            from_address=USER,
            to_address=USER,
            smtp_settings=probe_settings,
            imap_settings=probe_settings,
            receive_timeout=2.0,
            poll_interval=0.1,
        )
        commands = [line.split(b" ", 1)[1].strip() for line in imap.received]

    assert result.ok and result.received is True, result.message
    stores = [c for c in commands if c.upper().startswith(b"UID STORE")]
    assert stores == [b"UID STORE 7 +FLAGS.SILENT (\\Deleted)"]  # never the user's UID 3
    expunged = any(c.upper().startswith(b"EXPUNGE") for c in commands)
    # EXPUNGE would also remove UID 3, which the user flagged but still keeps.
    assert expunged is not others_deleted
    assert result.deleted is not others_deleted
    if others_deleted:
        assert result.hint and SUBJECT in result.hint
    assert_no_secret(result)
