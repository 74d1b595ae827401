"""Receiving: what a folder's history looks like to the watcher. Polling servers and several
folders, a backfill, a folder the server renumbers, and the connections a quiet watcher holds.
Real pymap servers over real sockets, a real inboxd stack with its receiver."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aioimaplib
import pytest

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from tests.conftest import Verifier, VerifierWith
from tests.inboxd.test_receiving import (
    PASSWORD,
    USERS,
    create_watched,
    mail,
    servers,  # noqa: F401  (a fixture of that module, used here)
    subjects,
)
from tests.support.mailservers import ImapMode, ImapServer, MailCerts
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

EVENTS = (
    "subscription { emailInboxEvents { kind inboxId messageId folder "
    "inbox { receiving { state } } } }"
)
NODES = """
query($id: ID!) {
  messages(inboxId: $id, first: 50) { edges { node { id subject folder uid } } }
}"""
STATE = "query($id: ID!) { emailInbox(id: $id) { receiving { state idleSupported } } }"
LINGER = 0.2  # the IDLE checker's linger in this module


@pytest.fixture(scope="module")
async def receiving(verifier_with: VerifierWith) -> AsyncIterator[Verifier]:
    async with verifier_with(
        receiving_enabled=True, receiving_idle_check_linger_seconds=LINGER
    ) as running:
        yield running


class Mailbox:
    """Another mail client of the same account: creates, deletes and fills folders."""

    def __init__(self, client: aioimaplib.IMAP4_SSL) -> None:
        self.client = client

    @classmethod
    async def open(cls, server: ImapServer, certs: MailCerts, user: str) -> Mailbox:
        context = ssl.create_default_context(cafile=certs.ca_file)
        client = aioimaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context)
        await client.wait_hello_from_server()
        assert (await client.login(user, PASSWORD)).result == "OK"
        return cls(client)

    async def command(self, name: str, *args: Any) -> None:
        response = await getattr(self.client, name)(*args)
        assert response.result == "OK", (name, args, response)

    async def append(self, folder: str, raw: bytes, *, arrived: datetime | None = None) -> None:
        # aioimaplib's date argument is the APPEND's INTERNALDATE: when the mail "arrived".
        await self.command("append", raw, folder, None, arrived)

    async def close(self) -> None:
        await self.client.logout()


async def _stored(tenant: Any, inbox_id: str) -> dict[str, dict[str, Any]]:
    result = await tenant.client(NODES, {"id": inbox_id})
    return {e["node"]["subject"]: e["node"] for e in result.data["messages"]["edges"]}


async def _restart_receiver(receiving: Verifier) -> None:
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    background.receiver = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    await background.receiver.start()


async def test_a_server_without_idle_is_polled_and_every_folder_is_read(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
    certs: MailCerts,
) -> None:
    user = "user0@example.test"
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context, idle=False) as imap:
        box = await Mailbox.open(imap, certs, user)
        await box.command("create", "Work")
        tenant = await receiving.tenant()
        inbox_id = await create_watched(
            receiving, tenant, {**servers, "TLS": imap}, user, folders=["INBOX", "Work"]
        )
        state = (await tenant.client(STATE, {"id": inbox_id})).data["emailInbox"]["receiving"]
        assert state == {"state": "POLLING", "idleSupported": False}
        await box.append("INBOX", mail("to the inbox"))
        await box.append("Work", mail("to work"))

        async def both() -> dict[str, dict[str, Any]] | None:
            found = await _stored(tenant, inbox_id)
            return found if len(found) >= 2 else None

        found = await wait_until(both, "a message from each folder stored")
        assert {s: n["folder"] for s, n in found.items()} == {
            "to the inbox": "INBOX",
            "to work": "Work",
        }
        await box.close()


async def test_a_backfill_imports_the_last_days_and_nothing_older(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
    certs: MailCerts,
) -> None:
    user = "user1@example.test"
    now = datetime.now(UTC)
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        box = await Mailbox.open(imap, certs, user)
        await box.append("INBOX", mail("ten days old"), arrived=now - timedelta(days=10))
        await box.append("INBOX", mail("two days old"), arrived=now - timedelta(days=2))
        await box.append("INBOX", mail("an hour old"), arrived=now - timedelta(hours=1))
        tenant = await receiving.tenant()
        backfilled = await create_watched(
            receiving, tenant, {**servers, "TLS": imap}, user, backfill_days=3
        )

        async def two() -> list[str] | None:
            found = sorted(await subjects(tenant, backfilled))
            return found if len(found) >= 2 else None

        assert await wait_until(two, "the last three days imported") == [
            "an hour old",
            "two days old",
        ]
        # The same mailbox without a backfill: nothing already there is imported; new mail is.
        other = await receiving.tenant()
        plain = await create_watched(receiving, other, {**servers, "TLS": imap}, user)
        await box.append("INBOX", mail("new"))
        await wait_until(lambda: _has(other, plain, "new"), "new mail stored")
        assert await subjects(other, plain) == ["new"]
        await box.close()


async def test_a_renumbered_folder_keeps_its_messages_imports_only_new_mail_and_says_so_once(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
    certs: MailCerts,
) -> None:
    user = "user2@example.test"
    week_ago = datetime.now(UTC) - timedelta(days=7)
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        box = await Mailbox.open(imap, certs, user)
        await box.command("create", "Work")
        tenant = await receiving.tenant()
        inbox_id = await create_watched(
            receiving, tenant, {**servers, "TLS": imap}, user, folders=["Work"]
        )
        first, second = mail("first", message_id="<a@x.test>"), mail("second")
        await box.append("Work", first)
        await box.append("Work", second)
        await wait_until(lambda: _count(tenant, inbox_id, 2), "two messages stored")
        before = await _stored(tenant, inbox_id)

        ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
        try:
            events = await ws.subscribe(EVENTS, {})
            assert receiving.stack.state.hub is not None
            await subscribed(receiving.stack.state.hub, tenant.workspace.id)
            background = receiving.stack.background
            assert background.receiver is not None
            await background.receiver.stop()
            # The server rebuilds the folder (a new UIDVALIDITY): the two stored messages come
            # back under new UIDs, with mail that was always there and one new message.
            await box.command("delete", "Work")
            await box.command("create", "Work")
            await box.append("Work", mail("there all along"), arrived=week_ago)
            await box.append("Work", second, arrived=week_ago)
            await box.append("Work", first, arrived=week_ago)
            await box.append("Work", mail("arrived meanwhile"))
            background.receiver = Receiver(
                receiving.stack.state, receiver_config(receiving.stack.settings)
            )
            await background.receiver.start()

            kinds: list[tuple[str, Any]] = []
            while ("MESSAGE_RECEIVED", "arrived meanwhile") not in kinds:
                message = await ws.next_payload(events, timeout=30)
                event = message["payload"]["data"]["emailInboxEvents"]
                if event["kind"] == "FOLDER_RESET":
                    kinds.append(("FOLDER_RESET", event["folder"]))
                elif event["kind"] == "MESSAGE_RECEIVED":
                    detail = await tenant.client(
                        "query($id: ID!) { message(id: $id) { subject } }",
                        {"id": event["messageId"]},
                    )
                    kinds.append(("MESSAGE_RECEIVED", detail.data["message"]["subject"]))
            assert kinds == [("FOLDER_RESET", "Work"), ("MESSAGE_RECEIVED", "arrived meanwhile")]
            after = await _stored(tenant, inbox_id)
            assert set(after) == {"first", "second", "arrived meanwhile"}
            for subject in ("first", "second"):  # the same messages, at their new places
                assert after[subject]["id"] == before[subject]["id"]
            # Appended in this order after the rebuild: second, then first.
            assert after["second"]["uid"] + 1 == after["first"]["uid"]
            assert after["first"]["uid"] != before["first"]["uid"]

            # Reading on: new mail arrives as before, and no second reset is announced.
            await _restart_receiver(receiving)
            await box.append("Work", mail("later"))
            message = await ws.next_payload(events, timeout=30)
            event = message["payload"]["data"]["emailInboxEvents"]
            assert event["kind"] == "MESSAGE_RECEIVED", event
        finally:
            await ws.close()
        assert set(await _stored(tenant, inbox_id)) == {
            "first",
            "second",
            "arrived meanwhile",
            "later",
        }
        await box.close()


async def test_a_quiet_idle_watcher_holds_one_connection_and_still_hears_new_mail(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
    certs: MailCerts,
) -> None:
    # The second connection that checks for mail landing as IDLE starts closes once it has
    # gone unused for the linger: 1,000 quiet inboxes hold 1,000 connections, not 2,000.
    assert receiving.stack.settings.receiving_idle_check_linger_seconds == LINGER
    user = "user3@example.test"
    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        tenant = await receiving.tenant()
        inbox_id = await create_watched(receiving, tenant, {**servers, "TLS": imap}, user)
        for n in range(3):
            await wait_until(lambda: imap.open_sessions == 1, "one connection while quiet")
            imap.deliver(user, mail(f"message {n}"))
            await wait_until(lambda n=n: _has(tenant, inbox_id, f"message {n}"), "stored")
        assert sorted(await subjects(tenant, inbox_id)) == [f"message {n}" for n in range(3)]


async def _has(tenant: Any, inbox_id: str, subject: str) -> bool:
    return subject in await subjects(tenant, inbox_id)


async def _count(tenant: Any, inbox_id: str, count: int) -> bool:
    return len(await subjects(tenant, inbox_id)) >= count


async def _held(receiving: Verifier) -> dict[str, int]:
    async with receiving.db.connection() as connection:
        rows = await connection.fetch(
            "SELECT owner, count(*) AS n FROM inbox_watch WHERE expires_at > now() GROUP BY owner"
        )
    return {r["owner"]: r["n"] for r in rows}


async def test_inboxes_are_shared_out_as_receivers_join_and_leave_and_mail_is_stored_once(
    receiving: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await receiving.tenant()
    users = [f"user{n}@example.test" for n in range(4, 8)]
    inbox_ids = [await create_watched(receiving, tenant, servers, u) for u in users]
    background = receiving.stack.background
    first = background.receiver
    assert first is not None
    async with receiving.db.connection() as connection:
        total = await connection.fetchval(
            "SELECT count(*) FROM email_inbox WHERE status = 'ACTIVE' AND receiving_enabled"
        )
    await wait_until(lambda: _sum_is(receiving, total, {first.owner}), "one receiver holds all")

    joined = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    await joined.start()
    try:

        async def halves() -> bool:
            held = await _held(receiving)
            mine, theirs = held.get(first.owner, 0), held.get(joined.owner, 0)
            return mine + theirs == total and abs(mine - theirs) <= 1 and len(held) == 2

        await wait_until(halves, "the inboxes shared out between two receivers")
        for n, user in enumerate(users):
            servers["TLS"].deliver(user, mail(f"while shared {n}"))
    finally:
        await joined.stop()
    await wait_until(lambda: _sum_is(receiving, total, {first.owner}), "all back with one")
    for n, (inbox_id, user) in enumerate(zip(inbox_ids, users, strict=True)):
        servers["TLS"].deliver(user, mail(f"after {n}"))
        await wait_until(lambda i=inbox_id, n=n: _has(tenant, i, f"after {n}"), "stored")
        assert sorted(await subjects(tenant, inbox_id)) == [f"after {n}", f"while shared {n}"]


async def _sum_is(receiving: Verifier, total: int, owners: set[str]) -> bool:
    held = await _held(receiving)
    return set(held) == owners and sum(held.values()) == total
