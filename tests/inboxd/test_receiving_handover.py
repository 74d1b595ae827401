"""Inboxes shared out between receiving processes (issue 12): an inbox handed over to a process
that joins is never watched by two IMAP sessions at once, even when the old session's server
stops answering as it is closed. Real pymap, real Postgres, two receivers on one database."""

from __future__ import annotations

import uuid
from typing import Any

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from tests.conftest import Verifier
from tests.inboxd.test_receiving import USERS, create_watched, servers
from tests.support.mailservers import ImapMode, ImapServer, MailCerts
from tests.support.waiting import wait_until

__all__ = ["servers"]  # the module's SMTP server (for the verification): test_receiving's


def never_answered(_user: str, line: bytes) -> bool:
    """IDLE's DONE and LOGOUT: what a watcher sends when it is stopped."""
    words = line.upper().split()
    return words == [b"DONE"] or words[1:2] == [b"LOGOUT"]


async def watchers(receiving: Verifier, inbox_ids: list[str]) -> list[Any]:
    async with receiving.db.connection() as connection:
        return list(
            await connection.fetch(
                "SELECT inbox_id, owner, expires_at > now() AS live, state FROM inbox_watch"
                " WHERE inbox_id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in inbox_ids],
            )
        )


async def test_a_handed_over_inbox_is_never_watched_twice_when_its_old_session_hangs(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    users = ["user1@example.test", "user2@example.test"]
    stack = receiving.stack
    first = stack.background.receiver
    assert first is not None
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        tenant = await receiving.tenant()
        inbox_ids = [
            await create_watched(receiving, tenant, {**servers, "TLS": imap}, user)
            for user in users
        ]
        assert {w["owner"] for w in await watchers(receiving, inbox_ids)} == {first.owner}
        # From now on the server answers neither IDLE's DONE nor LOGOUT: the watcher handed
        # over cannot log out, and its connection stays open until inboxd closes it.
        imap.unanswered = never_answered
        second = Receiver(stack.state, receiver_config(stack.settings))
        await second.start()  # two processes: one inbox each, so the first hands one over
        try:

            async def shared_out() -> bool:
                rows = await watchers(receiving, inbox_ids)
                owners = sorted(w["owner"] for w in rows if w["live"] and w["state"] == "IDLE")
                return owners == sorted([first.owner, second.owner])

            await wait_until(shared_out, "one inbox watched by each receiver")
            # The old session was closed before the new owner opened the mailbox, and the
            # inbox the first receiver kept stayed its own throughout.
            assert dict(imap.most_mailbox_sessions) == dict.fromkeys(users, 1)
            assert dict(imap.mailbox_sessions) == dict.fromkeys(users, 1)
        finally:
            imap.unanswered = None
            await second.stop()
