"""The receiver's IMAP sessions speak TLS through mail.imap_client's layer: the socket is read
READ_BUFFER (16 KiB) at a time, so a session keeps a 16 KiB buffer, not asyncio's 256 KiB
(bench/receiving.py, B9, measures what that is worth). Real pymap servers over real sockets:
implicit TLS and STARTTLS, a large message arriving whole, certificates verified and pinned."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mail.endpoint import Endpoint
from mail.imap_client import READ_BUFFER, Protocol
from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.network import NetworkPolicy
from mail.presets import Security
from storage.secrets import Secret
from tests.support.mailservers import ImapMode, ImapServer, MailCerts

USER = "reader@example.test"
PASSWORD = "Tls-Layer-Canary-31"
# Over a megabyte: many TLS records, far more than one read of any buffer in play.
BODY = ("0123456789abcdef" * 4 + "\r\n") * 16_000
BIG = (
    f"From: a@example.test\r\nTo: {USER}\r\nSubject: big\r\nMessage-ID: <big@example.test>\r\n"
    f"\r\n{BODY}"
).encode()


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[Security, ImapServer]]:
    users = {USER: PASSWORD}
    with (
        ImapServer(ImapMode.TLS, users, ssl_context=certs.server_context) as tls,
        ImapServer(ImapMode.STARTTLS, users, ssl_context=certs.server_context) as starttls,
        ImapServer(ImapMode.TLS, users, ssl_context=certs.untrusted_context) as stranger,
    ):
        tls.deliver(USER, BIG)
        starttls.deliver(USER, BIG)
        yield {Security.TLS: tls, Security.STARTTLS: starttls, Security.NONE: stranger}


def settings(ca_file: str | None) -> SessionSettings:
    return SessionSettings(
        connect_timeout=5.0,
        command_timeout=10.0,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=ca_file,
    )


def endpoint(server: ImapServer, security: Security, pin: str | None = None) -> Endpoint:
    return Endpoint("127.0.0.1", server.port, security, USER, Secret(PASSWORD), pin)


@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS])
async def test_a_large_message_arrives_whole_in_reads_of_at_most_16_kib(
    servers: dict[Security, ImapServer],
    certs: MailCerts,
    security: Security,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunks: list[int] = []
    received = Protocol.data_received

    def counted(self: Any, data: bytes) -> None:
        chunks.append(len(data))
        received(self, data)

    monkeypatch.setattr(Protocol, "data_received", counted)  # a spy: every byte still goes on
    session = await ImapSession.open(endpoint(servers[security], security), settings(certs.ca_file))
    try:
        await session.examine("INBOX")
        fetched = [m async for m in session.fetch(await session.uids_after(0))]
    finally:
        await session.close()
    assert [m.raw for m in fetched] == [BIG]
    # asyncio's and uvloop's own TLS hand over up to 256 KiB per read here.
    assert sum(chunks) > len(BIG) and max(chunks) <= READ_BUFFER == 16 * 1024


async def test_an_untrusted_certificate_is_refused_and_a_pinned_one_accepted(
    servers: dict[Security, ImapServer], certs: MailCerts
) -> None:
    stranger = servers[Security.NONE]
    with pytest.raises(ImapSessionError) as refused:
        await ImapSession.open(endpoint(stranger, Security.TLS), settings(certs.ca_file))
    assert refused.value.code == "CERTIFICATE_UNTRUSTED", refused.value.code
    pinned = endpoint(stranger, Security.TLS, pin=certs.untrusted_fingerprint)
    session = await ImapSession.open(pinned, settings(certs.ca_file))
    try:
        assert (await session.examine("INBOX")).uidnext >= 1
    finally:
        await session.close()


async def test_a_closed_session_says_goodbye_and_the_server_sees_it_go(
    servers: dict[Security, ImapServer], certs: MailCerts
) -> None:
    session = await ImapSession.open(
        endpoint(servers[Security.TLS], Security.TLS), settings(certs.ca_file)
    )
    transport = session._client.protocol.transport
    assert transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    await session.close()
    assert transport.is_closing()
