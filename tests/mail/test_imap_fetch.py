"""How the receiver's session fetches messages (``ImapSession.fetch`` and ``fetch_range``): a
message shorter than WHOLE_BELOW comes whole in the round trip that asks for its size and
flags; a longer one is fetched again, whole, or only its header past ``max_message_bytes``.
A real pymap server over implicit TLS; the commands counted as the server reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mail.endpoint import Endpoint
from mail.imap_session import WHOLE_BELOW, ImapSession, SessionSettings
from mail.network import NetworkPolicy
from mail.presets import Security
from storage.secrets import Secret
from tests.support.mailservers import ImapMode, ImapServer, MailCerts

USER = "fetch@example.test"
PASSWORD = "Fetch-Canary-52"
LIMIT = 3 * WHOLE_BELOW  # max_message_bytes in these tests


def message(subject: str, body_bytes: int) -> bytes:
    line = "0123456789abcdef" * 4 + "\r\n"
    body = (line * (body_bytes // len(line) + 1))[:body_bytes]
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n\r\n{body}"
    ).encode()


@pytest.fixture
async def server(certs: MailCerts) -> AsyncIterator[tuple[ImapServer, list[bytes]]]:
    commands: list[bytes] = []

    def record(_to: str, line: bytes) -> None:
        commands.append(line.split(b" ", 1)[-1].strip())
        return None

    with ImapServer(ImapMode.TLS, {USER: PASSWORD}, ssl_context=certs.server_context) as imap:
        imap.arrive_before = record
        yield imap, commands


async def opened(imap: ImapServer, certs: MailCerts) -> ImapSession:
    settings = SessionSettings(
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
        max_message_bytes=LIMIT,
    )
    endpoint = Endpoint("127.0.0.1", imap.port, Security.TLS, USER, Secret(PASSWORD))
    session = await ImapSession.open(endpoint, settings)
    await session.examine("INBOX")
    return session


def fetches(commands: list[bytes]) -> list[bytes]:
    return [c for c in commands if c.upper().startswith(b"UID FETCH")]


async def test_short_messages_come_whole_with_their_size_and_flags_in_one_fetch(
    server: tuple[ImapServer, list[bytes]], certs: MailCerts
) -> None:
    imap, commands = server
    sent = [message(f"short{n}", 2_000 * n) for n in range(3)]
    for raw in sent:
        imap.deliver(USER, raw)
    session = await opened(imap, certs)
    try:
        uids = await session.uids_after(0)
        commands.clear()
        got = await session.fetch_range(uids[0], uids[0] + 19)
        # Nothing there: nothing (where "n:*" would still match the last message).
        assert await session.fetch_range(uids[-1] + 1, uids[-1] + 20) == []
    finally:
        await session.close()
    assert [m.raw for m in got] == sent
    assert [m.uid for m in got] == uids and len(uids) == 3
    assert [m.size for m in got] == [len(raw) for raw in sent]
    assert not any(m.headers_only for m in got)
    assert all("\\seen" not in m.flags for m in got)
    assert len(fetches(commands)) == 2, commands  # one per range


async def test_longer_messages_are_fetched_again_whole_or_past_the_limit_header_only(
    server: tuple[ImapServer, list[bytes]], certs: MailCerts
) -> None:
    imap, commands = server
    exact = message("exact", 0)
    exact = message("exact", WHOLE_BELOW - len(exact))  # exactly WHOLE_BELOW bytes
    sent = [message("short", 100), exact, message("long", 2 * WHOLE_BELOW), message("huge", LIMIT)]
    assert len(sent[1]) == WHOLE_BELOW
    for raw in sent:
        imap.deliver(USER, raw)
    session = await opened(imap, certs)
    try:
        commands.clear()
        got = [m async for m in session.fetch(await session.uids_after(0))]
    finally:
        await session.close()
    assert len(got) == 4 and [m.uid for m in got] == sorted(m.uid for m in got)
    assert [m.raw for m in got[:3]] == sent[:3]
    assert [m.headers_only for m in got] == [False, False, False, True]
    assert got[3].size == len(sent[3]) > LIMIT
    assert got[3].raw.startswith(b"From: a@example.test") and b"0123456789" not in got[3].raw
    # Sizes with the first bytes, then the two to fetch whole, then the header.
    assert len(fetches(commands)) == 3, commands
