"""Message flags, deleteMessage and the delete policies, end to end: a real inboxd stack with
its receiver against pymap over TLS, and what the server holds checked from a separate IMAP
session, as a mail client would see it."""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import aioimaplib
import pytest

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from tests.conftest import Verifier
from tests.support import inboxes
from tests.support.mailservers import ImapServer, MailCerts, tls_mail_servers
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

PASSWORD = "Actions-Canary-5821"
USERS = {f"act{n}@example.test": PASSWORD for n in range(10)}

MESSAGES = """
query($id: ID!, $filter: MessageFilter) {
  messages(inboxId: $id, first: 50, filter: $filter) {
    edges { node { id subject messageId seen flagged } }
  }
}"""
MESSAGE = "query($id: ID!) { message(id: $id) { id subject seen flagged } }"
SET_FLAGS = """
mutation($id: ID!, $seen: Boolean, $flagged: Boolean) {
  setMessageFlags(id: $id, seen: $seen, flagged: $flagged) {
    __typename
    ... on SetMessageFlagsSuccess { receivedMessage { id seen flagged } }
    ... on NotFound { code message id }
    ... on ValidationError { code fields { field message } }
  }
}"""
DELETE = """
mutation($id: ID!) {
  deleteMessage(id: $id) {
    __typename
    ... on DeleteMessageSuccess { id }
    ... on NotFound { code message id }
    ... on ValidationError { code fields { field message } }
  }
}"""
AUDIT = (
    "query($id: ID!) { auditLog(first: 20, inboxId: $id) { edges { node { action details } } } }"
)
EVENTS = "subscription { emailInboxEvents { kind inboxId } }"
_MESSAGE_ID = re.compile(rb"Message-ID: (<[^>]+>)", re.IGNORECASE)


def mail(subject: str, message_id: str | None = None) -> tuple[bytes, str]:
    message_id = message_id or f"<{uuid.uuid4().hex}@sender.test>"
    raw = (
        f"From: Sender <sender@sender.test>\r\nTo: someone@example.test\r\nSubject: {subject}"
        f"\r\nMessage-ID: {message_id}\r\n\r\nHello, {subject}.\r\n"
    ).encode()
    return raw, message_id


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with tls_mail_servers(USERS, certs) as servers:
        yield servers


async def create_watched(
    tenant: Any, servers: dict[str, Any], user: str, policy: str = "DONT_DELETE"
) -> str:
    return await inboxes.create_watched(
        tenant, servers, user, PASSWORD, states=("IDLE",), deleteMessagePolicy=policy
    )


async def stored(tenant: Any, inbox_id: str, **filter: Any) -> dict[str, dict[str, Any]]:
    """The inbox's messages by subject."""
    result = await tenant.client(MESSAGES, {"id": inbox_id, "filter": filter or None})
    return {e["node"]["subject"]: e["node"] for e in result.data["messages"]["edges"]}


async def stored_soon(tenant: Any, inbox_id: str, *subjects: str) -> dict[str, dict[str, Any]]:
    async def all_there() -> dict[str, dict[str, Any]] | None:
        found = await stored(tenant, inbox_id)
        return found if set(subjects) <= set(found) else None

    return await wait_until(all_there, f"{subjects} stored")


async def on_server(certs: MailCerts, imap: ImapServer, user: str) -> dict[str, set[str]]:
    """What a mail client of ``user`` sees in INBOX: each message's Message-ID and flags.
    EXAMINE and BODY.PEEK: looking changes nothing."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", imap.port, ssl_context=context)
    await client.wait_hello_from_server()
    try:
        assert (await client.login(user, PASSWORD)).result == "OK"
        assert (await client.examine("INBOX")).result == "OK"
        client.protocol.state = aioimaplib.SELECTED  # aioimaplib moves there only on SELECT
        response = await client.uid("fetch", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        found: dict[str, set[str]] = {}
        flags: set[str] = set()
        for line in response.lines:
            text = bytes(line)
            if b"FETCH (" in text:
                match = re.search(rb"FLAGS \(([^)]*)\)", text)
                flags = set(match.group(1).decode().split()) if match else set()
            if (message_id := _MESSAGE_ID.search(text)) is not None:
                found[message_id.group(1).decode()] = flags
        return found
    finally:
        await client.logout()


async def append(certs: MailCerts, imap: ImapServer, user: str, raw: bytes, flags: str) -> None:
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", imap.port, ssl_context=context)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    assert (await client.append(raw, mailbox="INBOX", flags=flags)).result == "OK"
    await client.logout()


async def test_receiving_leaves_flags_alone_and_set_message_flags_reaches_the_server(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act0@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user)
    plain, plain_id = mail("plain")
    imap.deliver(user, plain)
    starred, starred_id = mail("starred")
    await append(certs, imap, user, starred, "(\\Flagged)")
    found = await stored_soon(tenant, inbox_id, "plain", "starred")
    assert (found["plain"]["seen"], found["plain"]["flagged"]) == (False, False)
    assert (found["starred"]["seen"], found["starred"]["flagged"]) == (False, True)
    # Stored, and still unseen on the server: receiving read it with BODY.PEEK.
    assert await on_server(certs, imap, user) == {plain_id: set(), starred_id: {"\\Flagged"}}

    ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        events = await ws.subscribe(EVENTS, {})
        assert receiving.stack.state.hub is not None
        await subscribed(receiving.stack.state.hub, tenant.workspace.id)
        result = await tenant.client(SET_FLAGS, {"id": found["plain"]["id"], "seen": True})
        payload = result.data["setMessageFlags"]
        assert payload["__typename"] == "SetMessageFlagsSuccess", payload
        assert (payload["receivedMessage"]["seen"], payload["receivedMessage"]["flagged"]) == (
            True,
            False,
        )

        async def seen_on_server() -> bool:
            return (await on_server(certs, imap, user))[plain_id] == {"\\Seen"}

        await wait_until(seen_on_server, "\\Seen stored on the server")
        # Nothing of the flag change reached the inbox events: a marker event comes next.
        update = (
            'mutation($id: ID!) { updateEmailInbox(id: $id, input: {tags: ["x"]}) { __typename } }'
        )
        await tenant.client(update, {"id": inbox_id})
        event = (await ws.next_payload(events, timeout=30))["payload"]["data"]
        assert event["emailInboxEvents"]["kind"] == "UPDATED", event
    finally:
        await ws.close()
    message = (await tenant.client(MESSAGE, {"id": found["plain"]["id"]})).data["message"]
    assert (message["seen"], message["flagged"]) == (True, False)
    assert set(await stored(tenant, inbox_id, unseen=True)) == {"starred"}
    assert set(await stored(tenant, inbox_id, unseen=False)) == {"plain", "starred"}

    result = await tenant.client(
        SET_FLAGS, {"id": found["plain"]["id"], "seen": False, "flagged": True}
    )
    assert result.data["setMessageFlags"]["receivedMessage"]["flagged"] is True
    result = await tenant.client(SET_FLAGS, {"id": found["starred"]["id"], "flagged": False})
    assert result.data["setMessageFlags"]["receivedMessage"]["flagged"] is False

    async def both_changed() -> bool:
        return await on_server(certs, imap, user) == {plain_id: {"\\Flagged"}, starred_id: set()}

    await wait_until(both_changed, "both messages' flags changed on the server")
    await wait_until(lambda: _none_pending(receiving, inbox_id), "the actions done and dropped")
    audit = (await tenant.client(AUDIT, {"id": inbox_id})).data["auditLog"]["edges"]
    actions = [e["node"] for e in audit if e["node"]["action"] == "MESSAGE_FLAGS_SET"]
    assert len(actions) == 3
    assert {"messageId": found["plain"]["id"], "seen": True, "flagged": None} in [
        a["details"] for a in actions
    ]


async def _none_pending(receiving: Verifier, inbox_id: str) -> bool:
    async with receiving.db.connection() as connection:
        left: int = await connection.fetchval(
            "SELECT count(*) FROM message_action WHERE inbox_id = $1", uuid.UUID(inbox_id)
        )
    return left == 0


async def test_a_wrong_or_foreign_id_is_refused_with_a_typed_error(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user, imap = "act1@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user)
    imap.deliver(user, mail("mine")[0])
    message_id = (await stored_soon(tenant, inbox_id, "mine"))["mine"]["id"]
    stranger = await receiving.tenant()
    for who, raw_id in ((stranger, message_id), (tenant, str(uuid.uuid4()))):
        for query, name in ((SET_FLAGS, "setMessageFlags"), (DELETE, "deleteMessage")):
            payload = (await who.client(query, {"id": raw_id, "seen": True})).data[name]
            assert payload["__typename"] == "NotFound", payload
            assert (payload["code"], payload["id"]) == ("NOT_FOUND", raw_id)
            assert raw_id in payload["message"]
    payload = (await tenant.client(DELETE, {"id": "not-an-id"})).data["deleteMessage"]
    assert payload["fields"] == [{"field": "id", "message": "is not a valid id"}]
    payload = (await tenant.client(SET_FLAGS, {"id": message_id})).data["setMessageFlags"]
    assert payload["__typename"] == "ValidationError"
    assert payload["fields"][0]["field"] == "seen"
    found = await stored(tenant, inbox_id)
    assert (found["mine"]["seen"], found["mine"]["flagged"]) == (False, False)


async def test_delete_under_dont_delete_keeps_the_server_copy_and_it_never_comes_back(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act2@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user)
    raw, gone_id = mail("unwanted")
    imap.deliver(user, raw)
    found = await stored_soon(tenant, inbox_id, "unwanted")
    payload = (await tenant.client(DELETE, {"id": found["unwanted"]["id"]})).data
    assert payload["deleteMessage"] == {
        "__typename": "DeleteMessageSuccess",
        "id": found["unwanted"]["id"],
    }
    assert (await tenant.client(MESSAGE, {"id": found["unwanted"]["id"]})).data["message"] is None
    # A copy with the same Message-ID is not imported again; mail after it is.
    imap.deliver(user, mail("unwanted, again", message_id=gone_id)[0])
    imap.deliver(user, mail("wanted")[0])
    await stored_soon(tenant, inbox_id, "wanted")
    assert set(await stored(tenant, inbox_id)) == {"wanted"}
    assert gone_id in await on_server(certs, imap, user)
    async with receiving.db.connection() as connection:
        queued = await connection.fetchval(
            "SELECT count(*) FROM message_action WHERE inbox_id = $1", uuid.UUID(inbox_id)
        )
    assert queued == 0


async def test_delete_when_deleted_removes_the_message_on_the_server(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act3@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user, "DELETE_WHEN_DELETED")
    doomed, doomed_id = mail("doomed")
    kept, kept_id = mail("kept")
    imap.deliver(user, doomed)
    imap.deliver(user, kept)
    found = await stored_soon(tenant, inbox_id, "doomed", "kept")
    payload = (await tenant.client(DELETE, {"id": found["doomed"]["id"]})).data
    assert payload["deleteMessage"]["__typename"] == "DeleteMessageSuccess"

    async def removed() -> bool:
        return set(await on_server(certs, imap, user)) == {kept_id}

    await wait_until(removed, "the deleted message removed from the server")
    assert doomed_id not in await on_server(certs, imap, user)
    assert set(await stored(tenant, inbox_id)) == {"kept"}


async def test_delete_on_receive_removes_mail_from_the_server_only_once_it_is_stored(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act4@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user, "DELETE_ON_RECEIVE")
    loop = asyncio.get_running_loop()
    rows_at_delete: list[int] = []

    async def rows_now() -> int:
        async with receiving.db.connection() as connection:
            count: int = await connection.fetchval(
                "SELECT count(*) FROM message WHERE inbox_id = $1", uuid.UUID(inbox_id)
            )
            return count

    def before_command(to: str, line: bytes) -> bytes | None:
        # pymap's thread, as the command reaches it: how many rows exist at that instant.
        if to == user and b"STORE" in line.upper() and b"\\DELETED" in line.upper():
            rows_at_delete.append(asyncio.run_coroutine_threadsafe(rows_now(), loop).result(10))
        return None

    imap.arrive_before = before_command
    try:
        for n in range(3):
            imap.deliver(user, mail(f"transient {n}")[0])

        async def emptied() -> bool:
            return await on_server(certs, imap, user) == {}

        await wait_until(emptied, "received mail removed from the server")
    finally:
        imap.arrive_before = None
    assert set(await stored(tenant, inbox_id)) == {f"transient {n}" for n in range(3)}
    assert rows_at_delete and all(count >= 1 for count in rows_at_delete)


async def test_actions_queued_while_no_receiver_runs_are_applied_when_one_does(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act5@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user, "DELETE_WHEN_DELETED")
    first, first_id = mail("to be read")
    second, second_id = mail("to be deleted")
    imap.deliver(user, first)
    imap.deliver(user, second)
    found = await stored_soon(tenant, inbox_id, "to be read", "to be deleted")
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    try:
        await tenant.client(SET_FLAGS, {"id": found["to be read"]["id"], "seen": True})
        await tenant.client(DELETE, {"id": found["to be deleted"]["id"]})
        # Nobody carries them to the server meanwhile.
        assert await on_server(certs, imap, user) == {first_id: set(), second_id: set()}
    finally:
        background.receiver = Receiver(
            receiving.stack.state, receiver_config(receiving.stack.settings)
        )
        await background.receiver.start()

    async def applied() -> bool:
        return await on_server(certs, imap, user) == {first_id: {"\\Seen"}}

    await wait_until(applied, "the queued actions applied by the new receiver")


async def test_a_crash_between_storing_and_deleting_still_deletes_under_delete_on_receive(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act6@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user, "DELETE_ON_RECEIVE")
    background = receiving.stack.background
    dead = background.receiver
    assert dead is not None and dead._task is not None
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    async def crash() -> None:
        # The process dies: every task stops at once and nothing gives the lease back.
        tasks.extend([dead._task, *dead.tasks.values()])  # type: ignore[list-item]
        for task in tasks:
            task.cancel()

    def before_command(to: str, line: bytes) -> bytes | None:
        # pymap's thread. The message is committed and the watcher is about to delete it on
        # the server: it dies before its SELECT is answered.
        if to == user and b"SELECT" in line.upper() and not tasks:
            asyncio.run_coroutine_threadsafe(crash(), loop).result(10)
        return None

    imap.arrive_before = before_command
    try:
        raw, message_id = mail("survives a crash")
        imap.deliver(user, raw)
        await wait_until(lambda: _crashed(tasks), "the watcher killed before deleting")
        await asyncio.gather(*tasks, return_exceptions=True)
        await stored_soon(tenant, inbox_id, "survives a crash")
        assert message_id in await on_server(certs, imap, user)
    finally:
        imap.arrive_before = None
    successor = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    background.receiver = successor  # the stack's receiver from here on
    await successor.start()

    async def deleted() -> bool:
        return await on_server(certs, imap, user) == {}

    await wait_until(deleted, "the message deleted by the receiver that took over")
    assert set(await stored(tenant, inbox_id)) == {"survives a crash"}


async def _crashed(tasks: list[asyncio.Task[None]]) -> bool:
    return bool(tasks)


async def test_an_action_for_another_uidvalidity_touches_nothing(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user, imap = "act7@example.test", servers["TLS"]
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, servers, user, "DELETE_WHEN_DELETED")
    raw, kept_id = mail("same uid, other folder generation")
    imap.deliver(user, raw)
    found = await stored_soon(tenant, inbox_id, "same uid, other folder generation")
    message_id = uuid.UUID(found["same uid, other folder generation"]["id"])
    async with receiving.db.connection() as connection:
        # A deletion queued before the server renumbered the folder: its UID names nothing now.
        await connection.execute(
            "INSERT INTO message_action (message_id, inbox_id, folder, uidvalidity, uid, kind, "
            "next_attempt_at, created_at) SELECT id, inbox_id, folder, uidvalidity + 1, uid, "
            "'DELETE', now(), now() FROM message WHERE id = $1",
            message_id,
        )
    await tenant.client(SET_FLAGS, {"id": str(message_id), "seen": True})  # wakes the watcher

    async def seen() -> bool:
        return (await on_server(certs, imap, user)).get(kept_id) == {"\\Seen"}

    await wait_until(seen, "the flag stored")
    await wait_until(lambda: _none_pending(receiving, inbox_id), "both actions done")
    assert kept_id in await on_server(certs, imap, user)
