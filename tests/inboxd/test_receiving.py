"""Receiving mail end to end: real pymap servers over real sockets, a real inboxd stack with
its receiver, messages read back over GraphQL and live over graphql-transport-ws."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import aioimaplib
import pytest

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from storage.inbox_passwords import encrypt_password
from storage.secrets import KeyRing, Secret
from tests.conftest import Verifier
from tests.support import inboxes
from tests.support.inboxes import CREATE_INBOX
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, tls_mail_servers
from tests.support.waiting import HUNG, subscribed, wait_until
from tests.support.ws import WSClient

PASSWORD = "Receive-Canary-4417"
USERS = {f"user{n}@example.test": PASSWORD for n in range(10)}

RECEIVING = """
query($id: ID!) {
  emailInbox(id: $id) {
    status statusReason errorCount lastMessageId
    receiving { enabled folders backfillDays state lastCheckAt idleSupported
                lastError { code message hint } }
  }
}"""
MESSAGES = """
query($id: ID!, $filter: MessageFilter) {
  messages(inboxId: $id, first: 50, filter: $filter) {
    edges { node { id subject messageId parseError textBody htmlBody uid
                   from { name address } to { address }
                   attachments { filename contentType size contentId } } }
    pageInfo { hasNextPage }
  }
}"""
MESSAGE = "query($id: ID!) { message(id: $id) { id subject textBody from { address } } }"
RECEIVED = "subscription($id: ID!) { messageReceived(inboxId: $id) { id subject messageId } }"


def mail(subject: str, *, message_id: str | None = None, extra: str = "") -> bytes:
    message_id = message_id or f"<{uuid.uuid4().hex}@sender.test>"
    return (
        f"From: Sender <sender@sender.test>\r\nTo: someone@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n{extra}\r\nHello, {subject}.\r\n"
    ).encode()


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with tls_mail_servers(USERS, certs, ImapMode.TLS, ImapMode.STARTTLS) as servers:
        yield servers


async def create_watched(
    receiving: Verifier,
    tenant: Any,
    servers: dict[str, Any],
    user: str,
    security: str = "TLS",
    **settings: Any,
) -> str:
    """An inbox of ``user`` on the IMAP server of ``security``, verified and being watched;
    ``settings``: its ``receiving`` input (folders, backfill_days)."""
    receiving_input = {
        "folders": settings.get("folders"),
        "backfillDays": settings.get("backfill_days"),
    }
    chosen = {k: v for k, v in receiving_input.items() if v is not None}
    return await inboxes.create_watched(
        tenant, servers, user, PASSWORD, security=security, receiving=chosen
    )


async def subjects(tenant: Any, inbox_id: str, **filter: Any) -> list[str]:
    result = await tenant.client(MESSAGES, {"id": inbox_id, "filter": filter or None})
    return [e["node"]["subject"] for e in result.data["messages"]["edges"]]


async def append_over_imap(server: ImapServer, certs: MailCerts, user: str, raw: bytes) -> None:
    """Deliver as a mail client would: an APPEND from a session of its own."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", server.port, ssl_context=context)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    assert (await client.append(raw, mailbox="INBOX")).result == "OK"
    await client.logout()


async def test_new_mail_reaches_a_subscriber_and_old_mail_is_not_imported(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user = "user0@example.test"
    servers["TLS"].deliver(user, mail("old news"))
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(RECEIVED, {"id": inbox_id})
        assert receiving.stack.state.hub is not None
        await subscribed(receiving.stack.state.hub, tenant.workspace.id)
        await append_over_imap(servers["TLS"], certs, user, mail("fresh"))
        message = await ws.next_payload(sub, timeout=30)
        assert message["type"] == "next", message
        received = message["payload"]["data"]["messageReceived"]
        assert received["subject"] == "fresh"
    finally:
        await ws.close()
    assert await subjects(tenant, inbox_id) == ["fresh"]
    detail = (await tenant.client(MESSAGE, {"id": received["id"]})).data["message"]
    assert detail["textBody"] == "Hello, fresh."
    assert detail["from"]["address"] == "sender@sender.test"
    inbox = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    assert inbox["lastMessageId"] == received["id"]
    assert inbox["receiving"]["idleSupported"] is True
    assert inbox["receiving"]["lastCheckAt"] is not None
    # Another workspace sees neither the message nor the inbox's messages.
    stranger = await receiving.tenant()
    assert (await stranger.client(MESSAGE, {"id": received["id"]})).data["message"] is None
    assert await subjects(stranger, inbox_id) == []


async def test_same_message_id_is_stored_once_and_a_bad_message_once_with_its_error(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user = "user1@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user, "STARTTLS")
    imap = servers["STARTTLS"]
    imap.deliver(user, mail("first copy", message_id="<same@sender.test>"))
    imap.deliver(user, mail("second copy", message_id="<same@sender.test>"))
    bad = mail("broken", extra='Content-Type: text/plain; charset="no-such-charset"\r\n')
    imap.deliver(user, bad)
    imap.deliver(user, mail("after the broken one"))

    async def all_read() -> list[str]:
        found = await subjects(tenant, inbox_id)
        return found if "after the broken one" in found else []

    found = await wait_until(all_read, "messages after the broken one stored")
    assert sorted(found) == ["after the broken one", "broken", "first copy"]
    result = await tenant.client(MESSAGES, {"id": inbox_id, "filter": {"subject": "broken"}})
    nodes = [e["node"] for e in result.data["messages"]["edges"]]
    [broken] = [n for n in nodes if n["subject"] == "broken"]
    assert broken["parseError"] and "no-such-charset" in broken["parseError"]


async def test_a_burst_of_more_mail_than_one_fetch_reaches_a_subscriber_once_each_in_order(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    # Mail announced in IDLE is read at once, the next batch of UIDs after the last one read;
    # the full read that follows finds the rest of a larger burst. None twice, none missed.
    user = "user9@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    batch = receiving.stack.settings.receiving_fetch_batch
    sent = [f"burst {n:02d}" for n in range(batch * 2 + 5)]
    ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(RECEIVED, {"id": inbox_id})
        assert receiving.stack.state.hub is not None
        await subscribed(receiving.stack.state.hub, tenant.workspace.id)
        servers["TLS"].deliver(user, mail("first"))  # the watcher reads, then IDLEs again
        await wait_until(lambda: _has(tenant, inbox_id, "first"), "first message stored")
        servers["TLS"].deliver_all(user, [mail(subject) for subject in sent])
        got = []
        for _ in range(len(sent) + 1):
            message = await ws.next_payload(sub, timeout=30)
            assert message["type"] == "next", message
            got.append(message["payload"]["data"]["messageReceived"]["subject"])
    finally:
        await ws.close()
    assert got == ["first", *sent]
    assert sorted(await subjects(tenant, inbox_id)) == sorted(["first", *sent])


async def test_mail_that_arrives_while_no_receiver_runs_is_picked_up_once(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user = "user2@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    servers["TLS"].deliver(user, mail("before the restart"))
    await wait_until(lambda: _has(tenant, inbox_id, "before the restart"), "first message stored")
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    servers["TLS"].deliver(user, mail("during the restart"))
    background.receiver = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    await background.receiver.start()
    await wait_until(
        lambda: _has(tenant, inbox_id, "during the restart"), "message from the gap stored"
    )
    servers["TLS"].deliver(user, mail("after the restart"))
    await wait_until(lambda: _has(tenant, inbox_id, "after the restart"), "new message stored")
    assert sorted(await subjects(tenant, inbox_id)) == [
        "after the restart",
        "before the restart",
        "during the restart",
    ]


async def _has(tenant: Any, inbox_id: str, subject: str) -> bool:
    return subject in await subjects(tenant, inbox_id)


async def test_two_receivers_racing_store_each_message_exactly_once(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    tenant = await receiving.tenant()
    users = [f"user{n}@example.test" for n in (3, 4, 5)]
    inbox_ids = [await create_watched(receiving, tenant, servers, u) for u in users]
    rival = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    await rival.start()
    try:
        for round_ in range(4):
            for user in users:
                servers["TLS"].deliver(user, mail(f"{user} {round_}"))
        for inbox_id, user in zip(inbox_ids, users, strict=True):

            async def all_four(inbox_id: str = inbox_id) -> bool:
                return len(await subjects(tenant, inbox_id)) >= 4

            await wait_until(all_four, f"four messages for {user}")
            assert sorted(await subjects(tenant, inbox_id)) == [f"{user} {n}" for n in range(4)]
    finally:
        await rival.stop()


async def test_mail_arriving_as_the_watcher_reads_or_goes_back_to_idle_is_received_at_once(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    # Mail delivered at the worst moments: just before the watcher's IDLE reaches the server
    # (pymap reports in IDLE only what changes after IDLE began) and just before its UID
    # FETCH or SEARCH (the EXISTS comes with that command's answer, which aioimaplib would
    # drop). Missed, a message would wait for the IDLE re-issue, far past this test's wait.
    assert receiving.stack.settings.receiving_idle_interval_seconds > HUNG
    user = "user7@example.test"
    moments: list[tuple[bytes, bytes]] = []  # (command, mail delivered just before it)

    def arrive_before(to: str, line: bytes) -> bytes | None:
        if to == user and moments and moments[0][0] in line.upper():
            return moments.pop(0)[1]
        return None

    with ImapServer(ImapMode.TLS, USERS, ssl_context=certs.server_context) as imap:
        imap.arrive_before = arrive_before
        tenant = await receiving.tenant()
        inbox_id = await create_watched(receiving, tenant, {**servers, "TLS": imap}, user)
        expected: list[str] = []

        async def all_stored() -> bool:
            return sorted(await subjects(tenant, inbox_id)) == sorted(expected)

        for round_ in range(3):
            for command in (b" IDLE", b" UID FETCH", b" UID SEARCH"):
                subject = f"{round_} before{command.decode()}"
                moments.append((command, mail(subject)))
                # Mail that wakes the watcher: it reads, then goes back to IDLE.
                imap.deliver(user, mail(f"{subject} (first)"))
                expected += [f"{subject} (first)", subject]
                await wait_until(all_stored, f"{expected[-2:]} stored, each once")


async def _watcher(receiving: Verifier, inbox_id: str) -> Any:
    async with receiving.db.connection() as connection:
        return await connection.fetchrow(
            "SELECT owner, expires_at > now() AS live, state FROM inbox_watch WHERE inbox_id = $1",
            uuid.UUID(inbox_id),
        )


async def test_a_dead_receivers_lease_lapses_and_another_takes_over_storing_mail_once(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user = "user8@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    background = receiving.stack.background
    dead = background.receiver
    assert dead is not None and dead._task is not None
    assert (await _watcher(receiving, inbox_id))["owner"] == dead.owner
    # Its process dies: every task stops at once and nothing gives the lease back.
    watching = list(dead.tasks.values())
    for task in (dead._task, *watching):
        task.cancel()
    await asyncio.gather(dead._task, *watching, return_exceptions=True)
    servers["TLS"].deliver(user, mail("while nobody watched"))
    successor = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    background.receiver = successor  # the stack's receiver from here on, for later tests
    await successor.start()

    async def taken_over() -> bool:
        watch = await _watcher(receiving, inbox_id)
        return watch["owner"] == successor.owner and watch["live"] and watch["state"] == "IDLE"

    await wait_until(taken_over, "the lapsed lease taken over")
    await wait_until(
        lambda: _has(tenant, inbox_id, "while nobody watched"), "mail from the gap stored"
    )
    servers["TLS"].deliver(user, mail("after the takeover"))
    await wait_until(lambda: _has(tenant, inbox_id, "after the takeover"), "new mail stored")
    assert sorted(await subjects(tenant, inbox_id)) == [
        "after the takeover",
        "while nobody watched",
    ]


async def test_refused_logins_fail_the_inbox_with_a_hint_and_watching_stops(
    receiving: Verifier, servers: dict[str, Any], keyring: KeyRing
) -> None:
    user = "user6@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    # The password changed at the provider: the stored one is now refused.
    async with receiving.db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET imap_password = $2, version = version + 1 WHERE id = $1",
            uuid.UUID(inbox_id),
            encrypt_password(keyring, uuid.UUID(inbox_id), "imap_password", Secret("stale")),
        )

    async def failed() -> dict[str, Any] | None:
        inbox = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
        return inbox if inbox["status"] == "FAILED" else None

    inbox = await wait_until(failed, "inbox FAILED after refused logins")
    assert "login refused" in inbox["statusReason"]
    assert inbox["receiving"]["state"] == "DISABLED"
    assert inbox["receiving"]["lastError"]["code"] == "AUTH_FAILED"
    assert inbox["receiving"]["lastError"]["hint"]
    assert inbox["errorCount"] >= receiving.stack.settings.receiving_auth_failure_limit
    assert PASSWORD not in str(inbox) and "stale" not in str(inbox)


async def test_receiving_settings_are_set_on_create_and_update(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    tenant = await receiving.tenant()
    created = await tenant.client(
        CREATE_INBOX,
        {"input": {"email": "settings@example.test", "password": PASSWORD,
                   "smtp": {"host": "127.0.0.1", "port": 1},
                   "imap": {"host": "127.0.0.1", "port": 1},
                   "receiving": {"folders": ["INBOX", "Archive"], "backfillDays": 7}}},
    )  # fmt: skip
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    inbox = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    assert inbox["receiving"]["folders"] == ["INBOX", "Archive"]
    assert inbox["receiving"]["backfillDays"] == 7
    assert inbox["receiving"]["enabled"] is True
    update = (
        "mutation($id: ID!, $input: UpdateEmailInboxInput!) { updateEmailInbox(id: $id, "
        "input: $input) { __typename ... on ValidationError { fields { field message } } } }"
    )
    result = await tenant.client(
        update, {"id": inbox_id, "input": {"receiving": {"backfillDays": 1000}}}
    )
    assert result.data["updateEmailInbox"]["__typename"] == "ValidationError"
    result = await tenant.client(
        update, {"id": inbox_id, "input": {"receiving": {"enabled": False}}}
    )
    assert result.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
    inbox = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    assert inbox["receiving"]["enabled"] is False
    assert inbox["receiving"]["state"] == "DISABLED"
