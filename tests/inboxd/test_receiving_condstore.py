"""Flags changed in another mail client reach inboxd where the server offers CONDSTORE: a
private Dovecot (tests/support/dovecot.py), mail delivered over LMTP, flags changed from an
IMAP session of the test's own as another mail client would, and a real inboxd stack with its
receiver read back over GraphQL. Skipped, naming the packages, where Dovecot is missing.
Servers without CONDSTORE (pymap) are covered by the other receiving tests, unchanged."""

from __future__ import annotations

import asyncio
import imaplib
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from mail.endpoint import Endpoint
from mail.idle_check import IdleChecker
from mail.imap_changes import changed_flags
from mail.imap_session import ImapSession, SessionSettings
from mail.network import NetworkPolicy
from mail.presets import Security
from storage import folder_sync
from storage.secrets import Secret
from tests.conftest import Verifier, VerifierWith
from tests.inboxd.test_receiving_dovecot import PASSWORD, create_watched, mail
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.mailservers import MailCerts
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

USERS = {f"flags{n}@example.test": PASSWORD for n in range(7)}
MESSAGES = """
query($id: ID!) {
  messages(inboxId: $id, first: 50) { edges { node { id subject seen flagged } } }
}"""
MESSAGE = "query($id: ID!) { message(id: $id) { id seen flagged } }"
SET_FLAGS = """
mutation($id: ID!, $seen: Boolean, $flagged: Boolean) {
  setMessageFlags(id: $id, seen: $seen, flagged: $flagged) {
    __typename ... on SetMessageFlagsSuccess { receivedMessage { id seen flagged } }
  }
}"""
EVENTS = "subscription { emailInboxEvents { kind inboxId } }"
_HIGHESTMODSEQ = re.compile(rb"HIGHESTMODSEQ (\d+)")


@pytest.fixture(scope="module")
def dovecot(certs: MailCerts) -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot(USERS, certs) as server:
        yield server


@pytest.fixture(scope="module")
async def receiving(dovecot: Dovecot, verifier_with: VerifierWith) -> AsyncIterator[Verifier]:
    # tests/conftest's, but started after this module's Dovecot and stopped before it
    async with verifier_with(receiving_enabled=True) as running:
        yield running


def _client(dovecot: Dovecot, user: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=dovecot.ca_file)
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context)
    client.login(user, PASSWORD)
    return client


def _store(dovecot: Dovecot, user: str, subject: str, change: str, flags: str) -> None:
    """Another mail client: ``change`` ("+FLAGS" or "-FLAGS") ``flags`` on the message of
    ``subject`` in ``user``'s INBOX."""
    with _client(dovecot, user) as client:
        assert client.select("INBOX")[0] == "OK"
        result, found = client.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        assert result == "OK" and found[0], found
        [uid] = found[0].split()
        result, lines = client.uid("STORE", uid.decode(), change, flags)
        assert result == "OK", lines


def _server_flags(dovecot: Dovecot, user: str, subject: str) -> bytes:
    """The FETCH FLAGS answer for the message of ``subject``, read-only."""
    with _client(dovecot, user) as client:
        assert client.select("INBOX", readonly=True)[0] == "OK"
        result, found = client.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        assert result == "OK" and found[0], found
        result, lines = client.uid("FETCH", found[0].decode(), "(FLAGS)")
        assert result == "OK", lines
        return b" ".join(line for line in lines if isinstance(line, bytes))


def _highestmodseq(dovecot: Dovecot, user: str) -> int:
    with _client(dovecot, user) as client:
        result, lines = client.status("INBOX", "(HIGHESTMODSEQ)")
        assert result == "OK", lines
        match = _HIGHESTMODSEQ.search(lines[0])
        assert match is not None, lines
        return int(match.group(1))


async def change(dovecot: Dovecot, user: str, subject: str, change: str, flags: str) -> None:
    await asyncio.to_thread(_store, dovecot, user, subject, change, flags)


async def by_subject(tenant: Any, inbox_id: str, *expected: str) -> dict[str, dict[str, Any]]:
    """The inbox's messages by subject, once all of ``expected`` are stored."""

    async def found() -> dict[str, dict[str, Any]] | None:
        result = await tenant.client(MESSAGES, {"id": inbox_id})
        nodes = {e["node"]["subject"]: e["node"] for e in result.data["messages"]["edges"]}
        return nodes if set(expected) <= set(nodes) else None

    nodes: dict[str, dict[str, Any]] = await wait_until(found, f"{expected} stored")
    return nodes


async def flags_become(tenant: Any, message_id: str, seen: bool, flagged: bool) -> None:
    last: list[Any] = []

    async def reached() -> bool:
        message = (await tenant.client(MESSAGE, {"id": message_id})).data["message"]
        last[:] = [message]
        return bool(message["seen"] == seen and message["flagged"] == flagged)

    try:
        await wait_until(reached, f"message {message_id}: seen {seen}, flagged {flagged}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last read: {last}") from None


async def stored_modseq(receiving: Verifier, inbox_id: str) -> int | None:
    async with receiving.db.connection() as connection:
        state = await folder_sync.folder_state(connection, uuid.UUID(inbox_id), "INBOX")
    assert state is not None
    return state.highestmodseq


async def test_flags_changed_in_another_client_while_watched_reach_the_message(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "flags0@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    assert await stored_modseq(receiving, inbox_id) is not None  # EXAMINE (CONDSTORE) read it
    dovecot.deliver(user, mail("read me elsewhere"))
    dovecot.deliver(user, mail("left alone"))
    nodes = await by_subject(tenant, inbox_id, "read me elsewhere", "left alone")
    message_id = nodes["read me elsewhere"]["id"]
    assert (nodes["read me elsewhere"]["seen"], nodes["read me elsewhere"]["flagged"]) == (
        False,
        False,
    )
    ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        events = await ws.subscribe(EVENTS, {})
        assert receiving.stack.state.hub is not None
        await subscribed(receiving.stack.state.hub, tenant.workspace.id)
        # The watcher is in IDLE for 600 s (the suite's setting) and no mail comes: only the
        # server's "* n FETCH (FLAGS ... MODSEQ ...)" in IDLE can end it within the wait.
        await change(dovecot, user, "read me elsewhere", "+FLAGS", "(\\Seen \\Flagged)")
        await flags_become(tenant, message_id, seen=True, flagged=True)
        await change(dovecot, user, "read me elsewhere", "-FLAGS", "(\\Seen)")
        await flags_become(tenant, message_id, seen=False, flagged=True)
        # No event told of either change: the next one is the marker's arrival.
        dovecot.deliver(user, mail("marker"))
        event = (await ws.next_payload(events, timeout=30))["payload"]["data"]
        assert event["emailInboxEvents"] == {"kind": "MESSAGE_RECEIVED", "inboxId": inbox_id}
    finally:
        await ws.close()
    left = (await by_subject(tenant, inbox_id))["left alone"]
    assert (left["seen"], left["flagged"]) == (False, False)

    async def caught_up() -> bool:
        return await stored_modseq(receiving, inbox_id) == await asyncio.to_thread(
            _highestmodseq, dovecot, user
        )

    await wait_until(caught_up, "the stored HIGHESTMODSEQ caught up with the server's")


async def _restart_receiver(receiving: Verifier) -> None:
    background = receiving.stack.background
    background.receiver = Receiver(receiving.stack.state, receiver_config(receiving.stack.settings))
    await background.receiver.start()


async def test_a_change_made_while_no_receiver_runs_is_read_from_the_stored_modseq(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "flags1@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    for subject in ("one", "two", "three"):
        dovecot.deliver(user, mail(subject))
    nodes = await by_subject(tenant, inbox_id, "one", "two", "three")
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    try:
        before = await stored_modseq(receiving, inbox_id)
        assert before is not None
        await change(dovecot, user, "two", "+FLAGS", "(\\Seen)")
        await change(dovecot, user, "three", "+FLAGS", "(\\Flagged)")
        server = await asyncio.to_thread(_highestmodseq, dovecot, user)
        assert server > before
    finally:
        await _restart_receiver(receiving)
    await flags_become(tenant, nodes["two"]["id"], seen=True, flagged=False)
    await flags_become(tenant, nodes["three"]["id"], seen=False, flagged=True)
    one = (await tenant.client(MESSAGE, {"id": nodes["one"]["id"]})).data["message"]
    assert (one["seen"], one["flagged"]) == (False, False)

    async def advanced() -> bool:
        return await stored_modseq(receiving, inbox_id) == server

    await wait_until(advanced, "the stored HIGHESTMODSEQ advanced to the server's")


async def test_a_pending_flag_change_is_not_undone_by_the_servers_older_state(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "flags2@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    dovecot.deliver(user, mail("mine to read"))
    message_id = (await by_subject(tenant, inbox_id, "mine to read"))["mine to read"]["id"]
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    try:
        result = await tenant.client(SET_FLAGS, {"id": message_id, "seen": True})
        assert result.data["setMessageFlags"]["__typename"] == "SetMessageFlagsSuccess"
        # Its STORE was refused once and waits for its backoff: still pending on the server.
        async with receiving.db.connection() as connection:
            postponed = await connection.fetchval(
                "UPDATE message_action SET next_attempt_at = now() + interval '1 hour' "
                "WHERE inbox_id = $1 RETURNING id",
                uuid.UUID(inbox_id),
            )
        assert postponed is not None
        # Meanwhile another client flags it: the server now reports it flagged but unseen.
        await change(dovecot, user, "mine to read", "+FLAGS", "(\\Flagged)")
    finally:
        await _restart_receiver(receiving)
    # The server's flagged is taken; its seen, older than inboxd's pending change, is not.
    await flags_become(tenant, message_id, seen=True, flagged=True)


async def test_own_flag_changes_read_back_change_nothing(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "flags3@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    dovecot.deliver(user, mail("set in inboxd"))
    message_id = (await by_subject(tenant, inbox_id, "set in inboxd"))["set in inboxd"]["id"]
    result = await tenant.client(SET_FLAGS, {"id": message_id, "flagged": True})
    assert result.data["setMessageFlags"]["receivedMessage"]["flagged"] is True
    # inboxd's STORE moves HIGHESTMODSEQ; the sync after it reads the same flags back.

    async def applied_and_read_back() -> bool:
        flags = await asyncio.to_thread(_server_flags, dovecot, user, "set in inboxd")
        if b"\\Flagged" not in flags:
            return False
        server = await asyncio.to_thread(_highestmodseq, dovecot, user)
        return await stored_modseq(receiving, inbox_id) == server

    await wait_until(applied_and_read_back, "inboxd's STORE applied and read back")
    message = (await tenant.client(MESSAGE, {"id": message_id})).data["message"]
    assert (message["seen"], message["flagged"]) == (False, True)
    await change(dovecot, user, "set in inboxd", "+FLAGS", "(\\Seen)")
    await flags_become(tenant, message_id, seen=True, flagged=True)


async def test_only_messages_changed_since_the_given_modseq_are_read_in_bounded_batches(
    dovecot: Dovecot,
) -> None:
    user = "flags4@example.test"
    subjects = [f"batch {n}" for n in range(7)]
    for subject in subjects:
        dovecot.deliver(user, mail(subject))
    endpoint = Endpoint("127.0.0.1", dovecot.imaps_port, Security.TLS, user, Secret(PASSWORD))
    settings = SessionSettings(
        network=NetworkPolicy(allow_private_hosts=True), ca_file=dovecot.ca_file
    )
    session = await ImapSession.open(endpoint, settings)
    try:
        assert session.condstore
        before = await session.examine("INBOX")
        assert before.highestmodseq is not None
        last_uid = before.uidnext - 1
        await change(dovecot, user, "batch 1", "+FLAGS", "(\\Seen)")
        await change(dovecot, user, "batch 5", "+FLAGS", "(\\Flagged)")
        after = await session.examine("INBOX")
        assert after.highestmodseq is not None and after.highestmodseq > before.highestmodseq
        assert (await session.status("INBOX")).highestmodseq == after.highestmodseq
        found = [b async for b in changed_flags(session, before.highestmodseq, last_uid)]
        assert [sorted(b.items()) for b in found] == [
            [(2, frozenset({"\\seen"})), (6, frozenset({"\\flagged"}))]
        ]
        # Everything since 0, two messages per UID FETCH: four batches, none larger.
        everything = [b async for b in changed_flags(session, 0, last_uid, batch=2)]
        assert [len(b) for b in everything] == [2, 2, 2, 1]
        # Nothing changed since the latest: no FETCH at all.
        assert [b async for b in changed_flags(session, after.highestmodseq, last_uid)] == []
    finally:
        await session.close()


async def test_the_idle_checker_sees_a_flag_changed_after_the_folder_was_read(
    dovecot: Dovecot,
) -> None:
    # Between a read and IDLE, Dovecot tells of a flag change during whatever command runs,
    # where aioimaplib drops it: the checker's STATUS HIGHESTMODSEQ is what ends IDLE then.
    user = "flags5@example.test"
    dovecot.deliver(user, mail("checked"))
    settings = SessionSettings(
        network=NetworkPolicy(allow_private_hosts=True), ca_file=dovecot.ca_file
    )
    endpoint = Endpoint("127.0.0.1", dovecot.imaps_port, Security.TLS, user, Secret(PASSWORD))
    session = await ImapSession.open(endpoint, settings)
    checker = IdleChecker(lambda: ImapSession.open(endpoint, settings), linger=60.0)
    try:
        read = await session.examine("INBOX")
        assert not await checker.moved("INBOX", read.uidnext, read.highestmodseq)
        await change(dovecot, user, "checked", "+FLAGS", "(\\Seen)")
        assert await checker.moved("INBOX", read.uidnext, read.highestmodseq)
        assert not await checker.moved("INBOX", read.uidnext)  # UIDNEXT alone did not move
    finally:
        await checker.close()
        await session.close()


async def test_a_folder_read_before_condstore_has_its_stored_flags_read_once(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    # As after an upgrade, or on a server that only now offers CONDSTORE: no HIGHESTMODSEQ
    # stored, so there is no "since" to ask from; every stored message's flags are read.
    user = "flags6@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    dovecot.deliver(user, mail("from before"))
    message_id = (await by_subject(tenant, inbox_id, "from before"))["from before"]["id"]
    background = receiving.stack.background
    assert background.receiver is not None
    await background.receiver.stop()
    try:
        async with receiving.db.connection() as connection:
            await connection.execute(
                "UPDATE folder_sync SET highestmodseq = NULL WHERE inbox_id = $1",
                uuid.UUID(inbox_id),
            )
        await change(dovecot, user, "from before", "+FLAGS", "(\\Flagged)")
    finally:
        await _restart_receiver(receiving)
    await flags_become(tenant, message_id, seen=False, flagged=True)
    server = await asyncio.to_thread(_highestmodseq, dovecot, user)

    async def recorded() -> bool:
        return await stored_modseq(receiving, inbox_id) == server

    await wait_until(recorded, "the server's HIGHESTMODSEQ stored")
