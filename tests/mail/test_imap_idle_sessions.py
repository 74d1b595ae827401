"""Many receiving sessions in IDLE at once, as one inboxd process holds them (B9).

An idle session is a TLS connection, aioimaplib's IDLE command and the watcher waiting for
it: two asyncio tasks, and Python objects of a few KiB (docs/benchmarks.md, B9, says where
they go). Each wait still ends on what it must: mail announced, ``wake``, and (in
test_imap_dead_connection) the connection's end.
"""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aioimaplib
import pytest

from mail.endpoint import Endpoint
from mail.imap_session import ImapSession, SessionSettings
from mail.network import NetworkPolicy
from mail.presets import Security
from storage.secrets import Secret
from tests.support.mailservers import ImapMode, ImapServer, MailCerts
from tests.support.waiting import HUNG, wait_until, with_deadline

PASSWORD = "Idle-Sessions-5521"
SESSIONS = 24
USERS = {f"idle{n}@example.test": PASSWORD for n in range(SESSIONS + 1)}
# Python objects an idle session may hold (tracemalloc): 12.7 KiB measured when written
# (24 KiB before aioimaplib's per-connection deques and the wait's two extra tasks went).
BUDGET = 16 * 1024
# The server runs on a thread of this process: only what was allocated with the client's code
# on the stack counts (aioimaplib, mail/, this file).
CLIENT_CODE = [
    tracemalloc.Filter(True, str(Path(__file__).parents[2] / "mail" / "*"), all_frames=True),
    tracemalloc.Filter(True, str(Path(aioimaplib.__file__).parent / "*"), all_frames=True),
    tracemalloc.Filter(True, __file__, all_frames=True),
]


@pytest.fixture(scope="module")
def server(certs: MailCerts) -> Iterator[ImapServer]:
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        yield imap


def settings(certs: MailCerts) -> SessionSettings:
    return SessionSettings(
        connect_timeout=HUNG,
        command_timeout=HUNG,
        network=NetworkPolicy(allow_private_hosts=True),
        ca_file=certs.ca_file,
    )


async def opened(server: ImapServer, certs: MailCerts, user: str) -> ImapSession:
    endpoint = Endpoint("127.0.0.1", server.port, Security.TLS, user, Secret(PASSWORD))
    session = await ImapSession.open(endpoint, settings(certs))
    await session.examine("INBOX")
    return session


async def append(server: ImapServer, certs: MailCerts, user: str) -> None:
    """Mail delivered as a client would: an APPEND from a session of its own."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    raw = b"From: a@sender.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nHello.\r\n"
    assert (await client.append(raw, mailbox="INBOX")).result == "OK"
    await client.logout()


async def test_sessions_in_idle_hold_two_tasks_and_few_kib_each_and_each_wait_ends_alone(
    server: ImapServer, certs: MailCerts
) -> None:
    users = sorted(USERS)[:SESSIONS]
    # One session opened and closed first: what the first connection of a process allocates
    # once (SSL context, regexes, caches) is not any session's.
    await (await opened(server, certs, sorted(USERS)[-1])).close()
    in_idle: set[int] = set()

    def nothing_before(index: int) -> Callable[[], Awaitable[bool]]:
        async def arrived() -> bool:
            # Asked once IDLE is accepted; the wait that follows starts in this same step.
            in_idle.add(index)
            return False

        return arrived

    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start(32)
    try:
        before = tracemalloc.take_snapshot()
        sessions = [await opened(server, certs, user) for user in users]
        waits = [
            asyncio.create_task(session.wait_for_change(HUNG * 10, nothing_before(i)))
            for i, session in enumerate(sessions)
        ]
        await wait_until(lambda: len(in_idle) == SESSIONS, "every session in IDLE")
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    try:
        growth = after.filter_traces(CLIENT_CODE).compare_to(
            before.filter_traces(CLIENT_CODE), "filename"
        )
        grown = sum(stat.size_diff for stat in growth)
        assert grown / SESSIONS <= BUDGET, f"{grown / SESSIONS / 1024:.1f} KiB per idle session"
        assert len(asyncio.all_tasks()) - tasks_before <= 2 * SESSIONS

        # Mail for one ends that one's wait; a wake ends another's; the rest wait on.
        await with_deadline(append(server, certs, users[3]), "mail appended")
        await with_deadline(waits[3], "the wait of the session that got mail ends")
        assert sessions[3].arrivals_noticed
        sessions[7].wake()
        await with_deadline(waits[7], "the woken session's wait ends")
        assert not sessions[7].arrivals_noticed
        assert not any(w.done() for i, w in enumerate(waits) if i not in (3, 7))
    finally:
        for session in sessions:
            session.wake()
        await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.gather(*(session.close() for session in sessions))
