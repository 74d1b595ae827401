"""Sending through a real Dovecot (Debian's packages; issue 13): a composed reply goes out
through Dovecot's submission service, reaches the recipient's INBOX threaded under its
parent, and its copy lands in the sender's Sent folder, found by the \\Sent special-use
attribute. Skipped, naming the packages, where Dovecot is not installed."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from mail.compose import Outgoing, compose, envelope_recipients, make_message_id
from mail.imap_session import ImapSession, SessionSettings
from mail.network import NetworkPolicy
from mail.probes import ProbeSettings, Security
from mail.send import send_message
from mail.sent_folder import append_to_sent, find_in_sent
from tests.mail.conftest import PASSWORD, USER, EndpointFactory
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.mailservers import MailCerts
from tests.support.waiting import wait_until

BOB, BOB_PASSWORD = "bob@example.test", "bob-pass-123"


@pytest.fixture(scope="module")
def dovecot(certs: MailCerts) -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot({USER: PASSWORD, BOB: BOB_PASSWORD}, certs) as server:
        yield server


@pytest.fixture
def session_settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=5.0,
        command_timeout=10.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


def fetch_all(dovecot: Dovecot, user: str, password: str, folder: str) -> list[tuple[bytes, bytes]]:
    context = ssl.create_default_context(cafile=dovecot.ca_file)
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context)
    try:
        client.login(user, password)
        client.select(folder, readonly=True)
        _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


async def test_dovecot_marks_its_sent_folder_special_use(
    dovecot: Dovecot, endpoint: EndpointFactory, session_settings: SessionSettings
) -> None:
    session = await ImapSession.open(
        endpoint(dovecot.imap_port, Security.STARTTLS), session_settings
    )
    try:
        folders = {f.name: f.attributes for f in await session.folders()}
    finally:
        await session.close()
    assert "\\sent" in folders["Sent"]


async def test_a_reply_is_delivered_threaded_and_filed_in_sent(
    dovecot: Dovecot,
    endpoint: EndpointFactory,
    probe_settings: ProbeSettings,
    session_settings: SessionSettings,
) -> None:
    parent, root = "<parent.7@example.test>", "<root.3@example.test>"
    message = Outgoing(
        from_address=USER,
        from_name="Alice",
        to=[("Bob", BOB)],
        cc=[],
        bcc=[],
        subject="Re: the plan",
        text="Agreed.",
        html="<p>Agreed.</p>",
        signature_text="Alice",
        signature_html=None,
        in_reply_to=parent,
        references=[root],
        headers={},
        attachments=[],
        message_id=make_message_id("example.test"),
        date=datetime.now(UTC),
    )
    data = compose(message, max_bytes=1_000_000)
    submission = endpoint(dovecot.submission_port, Security.STARTTLS)
    settings = ProbeSettings(
        connect_timeout=5.0,
        overall_timeout=20.0,
        network=probe_settings.network,
        ca_file=probe_settings.ca_file,
    )
    outcome = await send_message(
        submission,
        settings,
        envelope_from=USER,
        recipients=envelope_recipients(message),
        data=data,
    )
    assert outcome.accepted, outcome

    inbox = endpoint(dovecot.imap_port, Security.STARTTLS, username=BOB, password=BOB_PASSWORD)
    await wait_until(
        lambda: find_in_sent(inbox, session_settings, message.message_id, "INBOX"),
        "the reply in Bob's INBOX",
    )
    [(_, delivered)] = fetch_all(dovecot, BOB, BOB_PASSWORD, "INBOX")
    received = message_from_bytes(delivered, policy=policy.default)
    assert received["In-Reply-To"] == parent
    assert received["References"].split() == [root, parent]
    assert received["Message-ID"] == message.message_id

    mine = endpoint(dovecot.imap_port, Security.STARTTLS)
    assert await find_in_sent(mine, session_settings, message.message_id) is False
    assert await append_to_sent(mine, session_settings, data) == "Sent"
    assert await find_in_sent(mine, session_settings, message.message_id) is True
    [(flags, copy)] = fetch_all(dovecot, USER, PASSWORD, "Sent")
    assert copy == data and b"\\Seen" in flags
