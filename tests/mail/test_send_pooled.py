"""Sessions kept per inbox between messages (mail.smtp_pool, mail.sent_folder's pool), against
aiosmtpd and pymap on 127.0.0.1, counting connections, logins and QUITs on the server's side:
one login for consecutive messages, a new one for a changed password, a dead kept session
replaced only while nothing was handed over, and none kept after a failure."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import AsyncIterator

import pytest

from mail.endpoint import Endpoint
from mail.imap_session import SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeSettings, Security
from mail.send import SendOutcome, send_message
from mail.sent_folder import SentPool, append_to_sent, sent_pool
from mail.session_pool import PoolLimits
from mail.smtp_pool import SmtpPool, smtp_pool
from tests.mail.conftest import PASSWORD, USER, EndpointFactory
from tests.support.mailservers import ImapServer, MailCerts, SmtpServer
from tests.support.waiting import wait_until

BOB = "bob@example.test"
INBOX = "inbox-1"


def message(n: int) -> bytes:
    return (
        f"From: {USER}\r\nTo: {BOB}\r\nSubject: m{n}\r\n"
        f"Message-ID: <pooled.{n}@example.test>\r\n\r\nHello {n}.\r\n"
    ).encode()


@pytest.fixture
async def pool() -> AsyncIterator[SmtpPool]:
    kept = smtp_pool(PoolLimits(linger=30.0, max_uses=50))
    try:
        yield kept
    finally:
        await kept.close()


class Marks:
    """The caller's write-ahead mark: counts how often it was asked."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> bool:
        self.count += 1
        return True


async def send(
    pool: SmtpPool, endpoint: Endpoint, settings: ProbeSettings, n: int, marks: Marks | None = None
) -> SendOutcome:
    return await send_message(
        endpoint,
        settings,
        envelope_from=USER,
        recipients=[BOB],
        data=message(n),
        before_data=marks,
        pool=pool,
        owner=INBOX,
    )


def received(server: SmtpServer, n: int) -> int:
    return sum(f"<pooled.{n}@example.test>".encode() in m.data for m in server.messages)


async def test_consecutive_messages_of_an_inbox_share_one_connection_and_login(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    for n in range(3):
        assert (await send(pool, inbox, probe_settings, n)).accepted
    assert [received(smtp_starttls, n) for n in range(3)] == [1, 1, 1]
    assert (smtp_starttls.connections, smtp_starttls.auth_attempts) == (1, 1)
    assert pool.idle_count == 1
    # Another inbox on the same server and account is not given that session.
    assert (await send_message(inbox, probe_settings, envelope_from=USER, recipients=[BOB],
                               data=message(3), pool=pool, owner="inbox-2")).accepted  # fmt: skip
    assert smtp_starttls.connections == 2


async def test_a_changed_password_gets_a_new_session_and_the_old_one_is_quit(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    assert (
        await send(pool, endpoint(smtp_starttls.port, Security.STARTTLS), probe_settings, 0)
    ).accepted
    smtp_starttls.users[USER] = "a-new-password-42"
    changed = endpoint(smtp_starttls.port, Security.STARTTLS, password="a-new-password-42")
    assert (await send(pool, changed, probe_settings, 1)).accepted
    assert (smtp_starttls.connections, smtp_starttls.auth_attempts) == (2, 2)
    await wait_until(lambda: smtp_starttls.quits == 1, "the old session QUIT")
    assert pool.idle_count == 1


async def test_a_kept_session_the_server_closed_while_idle_is_replaced(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    assert (await send(pool, inbox, probe_settings, 0)).accepted
    smtp_starttls.drop_connections()
    marks = Marks()
    assert (await send(pool, inbox, probe_settings, 1, marks)).accepted
    assert received(smtp_starttls, 1) == 1 and marks.count == 1
    assert smtp_starttls.connections == 2


async def test_a_kept_session_refused_with_421_before_data_is_replaced_once(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    """The server caps messages per connection: the kept session's MAIL gets 421 and the
    connection closes. Nothing was handed over, so a fresh session sends it, once."""
    smtp_starttls.max_messages_per_connection = 1
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    assert (await send(pool, inbox, probe_settings, 0)).accepted
    marks = Marks()
    outcome = await send(pool, inbox, probe_settings, 1, marks)
    assert outcome.accepted, outcome
    assert received(smtp_starttls, 1) == 1 and marks.count == 1
    assert smtp_starttls.connections == 2


async def test_a_failure_after_data_began_is_never_retried_on_a_fresh_session(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    assert (await send(pool, inbox, probe_settings, 0)).accepted
    smtp_starttls.vanish_after_data = 1  # stored, and the reply never leaves
    marks = Marks()
    outcome = await send(pool, inbox, probe_settings, 1, marks)
    assert outcome.unknown and not outcome.accepted, outcome
    assert received(smtp_starttls, 1) == 1 and marks.count == 1
    assert smtp_starttls.connections == 1
    assert pool.idle_count == 0


async def test_a_refused_message_leaves_no_session_kept(
    smtp_starttls: SmtpServer,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    pool: SmtpPool,
) -> None:
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    assert (await send(pool, inbox, probe_settings, 0)).accepted
    smtp_starttls.data_replies.append("554 5.7.1 Rejected as spam")
    refused = await send(pool, inbox, probe_settings, 1)
    assert refused.permanent and refused.code == 554
    assert pool.idle_count == 0
    await wait_until(lambda: smtp_starttls.quits == 1, "the refused session QUIT")
    assert (await send(pool, inbox, probe_settings, 2)).accepted
    assert smtp_starttls.connections == 2


async def test_linger_zero_keeps_no_session(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    pool = smtp_pool(PoolLimits(linger=0.0))
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    try:
        for n in range(2):
            assert (await send(pool, inbox, probe_settings, n)).accepted
        assert (smtp_starttls.connections, smtp_starttls.auth_attempts) == (2, 2)
        await wait_until(lambda: smtp_starttls.quits == 2, "each session QUIT")
    finally:
        await pool.close()


async def test_a_session_carries_at_most_max_messages(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    pool = smtp_pool(PoolLimits(linger=30.0, max_uses=2))
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    try:
        for n in range(3):
            assert (await send(pool, inbox, probe_settings, n)).accepted
        assert smtp_starttls.connections == 2
    finally:
        await pool.close()


async def test_an_idle_session_is_quit_when_its_linger_ends_and_on_close(
    smtp_starttls: SmtpServer, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    brief = smtp_pool(PoolLimits(linger=0.2))
    inbox = endpoint(smtp_starttls.port, Security.STARTTLS)
    assert (await send(brief, inbox, probe_settings, 0)).accepted
    await wait_until(lambda: smtp_starttls.quits == 1, "the lingering session QUIT")
    assert brief.idle_count == 0
    await brief.close()
    kept = smtp_pool(PoolLimits(linger=300.0))
    assert (await send(kept, inbox, probe_settings, 1)).accepted
    assert kept.idle_count == 1
    await kept.close()
    assert smtp_starttls.quits == 2 and kept.idle_count == 0
    # Closed, it keeps nothing more.
    assert (await send(kept, inbox, probe_settings, 2)).accepted
    assert kept.idle_count == 0


@pytest.fixture
def session_settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=1.0,
        command_timeout=3.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


@pytest.fixture
async def sent_sessions() -> AsyncIterator[SentPool]:
    kept = sent_pool(PoolLimits(linger=30.0))
    try:
        yield kept
    finally:
        await kept.close()


def sent_folder_holds(server: ImapServer, certs: MailCerts) -> int:
    """How many messages the Sent folder holds, asked by the standard library's client."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=context)
    try:
        client.login(USER, PASSWORD)
        client.create("Sent")  # NO when it exists: either way it is there
        status, data = client.select("Sent", readonly=True)
        assert status == "OK", data
        return int(data[0] or 0)
    finally:
        client.logout()


async def test_sent_copies_of_an_inbox_share_one_imap_login(
    imap_tls: ImapServer,
    certs: MailCerts,
    endpoint: EndpointFactory,
    session_settings: SessionSettings,
    sent_sessions: SentPool,
) -> None:
    assert sent_folder_holds(imap_tls, certs) == 0
    before = imap_tls.auth_attempts
    inbox = endpoint(imap_tls.port, Security.TLS)
    for n in range(3):
        folder = await append_to_sent(
            inbox, session_settings, message(n), pool=sent_sessions, owner=INBOX
        )
        assert folder == "Sent"
    assert imap_tls.auth_attempts == before + 1
    assert imap_tls.open_sessions == 1
    assert sent_folder_holds(imap_tls, certs) == 3
    await sent_sessions.close()
    await wait_until(lambda: imap_tls.open_sessions == 0, "the kept session logged out")
