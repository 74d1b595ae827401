"""A receiving session whose server hangs up mid-command fails at once, not at its timeout.

aioimaplib leaves a command waiting on a dead connection until its own timeout, and some have
none: the CAPABILITY it sends after the greeting (under its state lock, so even a cancelled
connect never returned) and IDLE before the server's "+". Here every timeout is far longer
than the test's outer deadline: only the connection's end can finish these operations.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioimaplib
import pytest

from mail.endpoint import Endpoint
from mail.imap_session import ImapSession, ImapSessionError, SessionSettings
from mail.network import NetworkPolicy
from mail.presets import Security
from storage.secrets import Secret
from tests.support.mailservers import LineServer
from tests.support.waiting import HUNG, with_deadline

SETTINGS = SessionSettings(
    connect_timeout=HUNG * 10,
    command_timeout=HUNG * 10,
    network=NetworkPolicy(allow_private_hosts=True),
)
FAILED = (ImapSessionError, aioimaplib.AioImapException)


def endpoint(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port, Security.NONE, "user", Secret("pw"))


def script(hang_up_on: bytes) -> LineServer:
    """A server that answers like a small IMAP server until ``hang_up_on``, then hangs up
    without a word."""

    def respond(line: bytes) -> Sequence[bytes] | None:
        tag, _, rest = line.strip().partition(b" ")
        command = rest.split(b" ", 1)[0].upper()
        if command == hang_up_on:
            return None
        if command == b"CAPABILITY":
            return [b"* CAPABILITY IMAP4rev1 IDLE\r\n", tag + b" OK done\r\n"]
        if command == b"EXAMINE":
            return [
                b"* 0 EXISTS\r\n",
                b"* OK [UIDVALIDITY 7] ok\r\n",
                b"* OK [UIDNEXT 1] ok\r\n",
                tag + b" OK [READ-ONLY] done\r\n",
            ]
        return [tag + b" OK done\r\n"]

    return LineServer(b"* OK ready\r\n", respond)


async def test_a_server_that_hangs_up_instead_of_its_capabilities_fails_the_connect() -> None:
    with script(b"CAPABILITY") as server, pytest.raises(FAILED):
        await with_deadline(ImapSession.open(endpoint(server.port), SETTINGS), "open fails")


async def test_a_server_that_hangs_up_instead_of_accepting_idle_ends_the_wait() -> None:
    with script(b"IDLE") as server:
        session = await with_deadline(ImapSession.open(endpoint(server.port), SETTINGS), "open")
        try:
            await session.examine("INBOX")

            async def nothing_arrived() -> bool:
                return False

            with pytest.raises(FAILED):
                await with_deadline(
                    session.wait_for_change(HUNG * 10, nothing_arrived), "the wait ends"
                )
        finally:
            await session.close()


async def test_idle_on_a_connection_already_lost_fails_and_leaves_no_exception_behind() -> None:
    # aioimaplib runs IDLE as a task of its own: refused on a lost connection, its error must
    # still be retrieved (the suite's check reports one that never is).
    with script(b"NOOP") as server:
        session = await with_deadline(ImapSession.open(endpoint(server.port), SETTINGS), "open")
        try:
            await session.examine("INBOX")
            with pytest.raises(FAILED):
                await with_deadline(session.check_alive(), "the NOOP fails")
            assert session.lost

            async def nothing_arrived() -> bool:
                return False

            with pytest.raises(FAILED):
                await with_deadline(
                    session.wait_for_change(HUNG * 10, nothing_arrived), "the wait ends"
                )
        finally:
            await session.close()
