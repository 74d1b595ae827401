"""The Sent folder copy (issue 13) on pymap over TLS: APPEND the exact bytes flagged \\Seen,
find them again by Message-ID, pick the folder the way real servers name it, and answer
None (never raise) when the server cannot be reached."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator

import pytest

from mail.imap_mailbox import Folder, folders_of
from mail.imap_session import SessionSettings
from mail.network import NetworkPolicy
from mail.probes import Security
from mail.sent_folder import append_to_sent, find_in_sent, pick_sent_folder
from tests.mail.conftest import PASSWORD, USER, EndpointFactory
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, closed_port

MESSAGE_ID = "<sent.1@example.test>"
DATA = (
    "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: sent\r\n"
    f"Message-ID: {MESSAGE_ID}\r\n\r\nA copy for the Sent folder.\r\n"
).encode()


@pytest.fixture
def session_settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=1.0,
        command_timeout=3.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


@pytest.fixture
def imap(certs: MailCerts) -> Iterator[ImapServer]:
    with ImapServer(ImapMode.TLS, {USER: PASSWORD}, ssl_context=certs.server_context) as server:
        yield server


def mailbox(server: ImapServer, certs: MailCerts) -> imaplib.IMAP4_SSL:
    """A reference client (the standard library's) logged in to ``server``."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=context)
    client.login(USER, PASSWORD)
    return client


def stored(server: ImapServer, certs: MailCerts, folder: str) -> list[tuple[bytes, bytes]]:
    """(FETCH text with FLAGS, the message's bytes) of every message in ``folder``."""
    client = mailbox(server, certs)
    try:
        client.select(f'"{folder}"', readonly=True)
        _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[])")
        return [(item[0], item[1]) for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


def create(server: ImapServer, certs: MailCerts, *folders: str) -> None:
    client = mailbox(server, certs)
    try:
        for folder in folders:
            quoted = folder.replace("\\", "\\\\").replace('"', '\\"')
            assert client.create(f'"{quoted}"')[0] == "OK"
    finally:
        client.logout()


async def test_a_copy_is_stored_seen_and_found_by_message_id(
    imap: ImapServer,
    certs: MailCerts,
    endpoint: EndpointFactory,
    session_settings: SessionSettings,
) -> None:
    create(imap, certs, "Archive", "Sent Items")
    end = endpoint(imap.port, Security.TLS)
    assert await find_in_sent(end, session_settings, MESSAGE_ID) is False
    assert await append_to_sent(end, session_settings, DATA) == "Sent Items"
    [(text, raw)] = stored(imap, certs, "Sent Items")
    assert raw == DATA and b"\\Seen" in text
    assert await find_in_sent(end, session_settings, MESSAGE_ID) is True
    assert await find_in_sent(end, session_settings, "<other@example.test>") is False
    assert stored(imap, certs, "INBOX") == []


async def test_a_named_folder_is_used_as_given(
    imap: ImapServer,
    certs: MailCerts,
    endpoint: EndpointFactory,
    session_settings: SessionSettings,
) -> None:
    create(imap, certs, "Sent", 'Outgoing "copies"')
    end = endpoint(imap.port, Security.TLS)
    folder = 'Outgoing "copies"'
    assert await append_to_sent(end, session_settings, DATA, folder) == folder
    assert await find_in_sent(end, session_settings, MESSAGE_ID, folder) is True
    assert await find_in_sent(end, session_settings, MESSAGE_ID) is False  # not in "Sent"


async def test_without_a_sent_folder_nothing_is_stored(
    imap: ImapServer,
    certs: MailCerts,
    endpoint: EndpointFactory,
    session_settings: SessionSettings,
) -> None:
    end = endpoint(imap.port, Security.TLS)
    assert await append_to_sent(end, session_settings, DATA) is None
    assert await find_in_sent(end, session_settings, MESSAGE_ID) is False
    assert stored(imap, certs, "INBOX") == []


async def test_an_unreachable_or_refusing_server_gives_none(
    imap: ImapServer, endpoint: EndpointFactory, session_settings: SessionSettings
) -> None:
    nowhere = endpoint(closed_port(), Security.TLS)
    assert await find_in_sent(nowhere, session_settings, MESSAGE_ID) is None
    assert await append_to_sent(nowhere, session_settings, DATA) is None
    wrong = endpoint(imap.port, Security.TLS, password="not-the-password")
    assert await find_in_sent(wrong, session_settings, MESSAGE_ID) is None
    assert await append_to_sent(wrong, session_settings, DATA) is None


async def test_a_message_id_or_folder_that_could_inject_a_command_is_refused(
    imap: ImapServer, endpoint: EndpointFactory, session_settings: SessionSettings
) -> None:
    end = endpoint(imap.port, Security.TLS)
    with pytest.raises(ValueError):
        await find_in_sent(end, session_settings, '<a@b>" \r\nA1 DELETE INBOX')
    with pytest.raises(ValueError):
        await append_to_sent(end, session_settings, DATA, "Sent\r\nA1 DELETE INBOX")
    assert imap.auth_attempts == 0


def test_list_responses_are_read_in_every_form_a_server_sends() -> None:
    lines = [
        b'(\\HasNoChildren) "/" INBOX',
        b'(\\HasNoChildren \\Sent) "." "Sent \\"copies\\""',
        b"(\\Noselect) NIL {7}",
        bytearray(b"Ge/send"),
        b"LIST completed.",
    ]
    assert folders_of(lines) == [
        Folder("INBOX", frozenset({"\\hasnochildren"}), "/"),
        Folder('Sent "copies"', frozenset({"\\hasnochildren", "\\sent"}), "."),
        Folder("Ge/send", frozenset({"\\noselect"}), None),
    ]


def folder(name: str, *attributes: str, delimiter: str = "/") -> Folder:
    return Folder(name, frozenset(a.lower() for a in attributes), delimiter)


@pytest.mark.parametrize(
    ("folders", "chosen"),
    [
        ([folder("Sent"), folder("Gesendet", "\\Sent")], "Gesendet"),  # special-use first
        ([folder("Sent", "\\Sent", "\\Noselect"), folder("Sent Items")], "Sent Items"),
        ([folder("INBOX.Sent Messages", delimiter="."), folder("SENT")], "SENT"),
        ([folder("INBOX.Sent", delimiter="."), folder("Archive")], "INBOX.Sent"),
        ([folder("Sent-old"), folder("Drafts", "\\Drafts")], None),
    ],
)
def test_the_sent_folder_is_the_special_use_one_else_the_usual_name(
    folders: list[Folder], chosen: str | None
) -> None:
    assert pick_sent_folder(folders) == chosen
