"""The test mail servers themselves: fast start, clean stop, SMTP deliveries landing in IMAP."""

from __future__ import annotations

import ssl
import threading
from email.message import EmailMessage

import aiosmtplib

from mail.probes import ProbeSettings, Security, probe_imap
from tests.mail.conftest import PASSWORD, USER, USERS, EndpointFactory
from tests.support.mailservers import (
    HOST,
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    deliver_to,
)


def test_servers_start_and_leave_no_thread(certs: MailCerts) -> None:
    before = set(threading.enumerate())
    with (
        SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=certs.server_context) as smtp,
        ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap,
    ):
        assert smtp.port and imap.port and smtp.port != imap.port
    assert set(threading.enumerate()) <= before


async def test_smtp_delivery_lands_in_imap_inbox(
    certs: MailCerts, endpoint: EndpointFactory, probe_settings: ProbeSettings
) -> None:
    client_tls = ssl.create_default_context(cafile=certs.ca_file)
    with ImapServer(ImapMode.STARTTLS, USERS, ssl_context=certs.server_context) as imap:
        smtp = SmtpServer(
            SmtpMode.TLS, USERS, ssl_context=certs.server_context, on_message=deliver_to(imap)
        )
        with smtp:
            message = EmailMessage()
            message["From"] = USER
            message["To"] = "bob@example.test"
            message["Subject"] = "round trip"
            message.set_content("hello bob")
            await aiosmtplib.send(
                message,
                hostname=HOST,
                port=smtp.port,
                use_tls=True,
                tls_context=client_tls,
                username=USER,
                password=PASSWORD,
                timeout=5,
                local_hostname="localhost",  # the default reverse-resolves this machine
            )
            received = smtp.wait_for_messages(1)

        assert received[0].login == USER
        assert received[0].rcpt_tos == ["bob@example.test"]
        assert b"round trip" in received[0].data
        assert imap.message_count("bob@example.test") == 1

        bob = endpoint(
            imap.port,
            Security.STARTTLS,
            username="bob@example.test",
            password=USERS["bob@example.test"],
        )
        result = await probe_imap(bob, probe_settings)
        assert result.ok, result.message
        assert result.message_count == 1
