"""Receiving mail from a real Dovecot (Debian's packages), end to end: a private instance in a
temp folder (tests/support/dovecot.py), mail delivered over LMTP as an MTA would, a real
inboxd stack with its receiver, messages read back over GraphQL and live over
graphql-transport-ws. Skipped, naming the packages, where Dovecot is not installed."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.conftest import Verifier, VerifierWith
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.inboxes import CREATE_INBOX
from tests.support.mailservers import MailCerts
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

PASSWORD = "Dovecot-Canary-5521"
# Many users: Dovecot allows 10 sessions per user and IP, and each watched inbox holds two.
USERS = {f"user{n}@example.test": PASSWORD for n in range(20)}

RECEIVING = """
query($id: ID!) {
  emailInbox(id: $id) {
    status statusReason
    receiving { state idleSupported lastError { code message } }
  }
}"""
TESTS = """
query($id: ID!) {
  emailInbox(id: $id) {
    connectionTests(first: 5) { edges { node {
      state error smtp { ok code } imap { ok code }
      roundTrip { ok code message sent received deleted }
    } } }
  }
}"""
TEST_CONNECTION = (
    "mutation($id: ID!) { testConnection(id: $id, roundTrip: true) { __typename "
    "... on TestConnectionSuccess { connectionTest { id state } } "
    "... on UserError { code message } } }"
)
MESSAGES = """
query($id: ID!) {
  messages(inboxId: $id, first: 50) { edges { node { id subject messageId } } }
}"""
RECEIVED = "subscription($id: ID!) { messageReceived(inboxId: $id) { id subject messageId } }"


def mail(subject: str) -> bytes:
    return (
        f"From: Sender <sender@sender.test>\r\nTo: someone@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@sender.test>\r\n"
        f"\r\nHello, {subject}.\r\n"
    ).encode()


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


async def inbox_state(tenant: Any, inbox_id: str) -> dict[str, Any]:
    inbox: dict[str, Any] = (await tenant.client(RECEIVING, {"id": inbox_id})).data["emailInbox"]
    return inbox


async def watch_state(tenant: Any, inbox_id: str) -> str:
    state: str = (await inbox_state(tenant, inbox_id))["receiving"]["state"]
    return state


async def create_watched(tenant: Any, dovecot: Dovecot, user: str, security: str = "TLS") -> str:
    """An inbox of ``user``: sending through Dovecot's submission (STARTTLS), receiving from
    its IMAP (``security``: STARTTLS on the IMAP port, TLS on the IMAPS port), verified and
    being watched."""
    imap_port = dovecot.imaps_port if security == "TLS" else dovecot.imap_port
    created = await tenant.client(
        CREATE_INBOX,
        {
            "input": {
                "email": user,
                "smtp": {"host": "127.0.0.1", "port": dovecot.submission_port,
                         "security": "STARTTLS", "password": PASSWORD},
                "imap": {"host": "127.0.0.1", "port": imap_port, "security": security,
                         "password": PASSWORD},
            }
        },
    )  # fmt: skip
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    inbox_id: str = payload["inbox"]["id"]

    seen: list[Any] = []

    async def watching() -> bool:
        inbox = await inbox_state(tenant, inbox_id)
        assert inbox["status"] != "FAILED", (inbox, dovecot.log())
        seen[:] = [inbox]
        state: str = inbox["receiving"]["state"]
        return state == "IDLE"

    try:
        await wait_until(watching, f"inbox {inbox_id} watched in IDLE")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None
    return inbox_id


async def subjects(tenant: Any, inbox_id: str) -> list[str]:
    result = await tenant.client(MESSAGES, {"id": inbox_id})
    return sorted(e["node"]["subject"] for e in result.data["messages"]["edges"])


async def stored(tenant: Any, inbox_id: str, *expected: str) -> None:
    """Until every one of ``expected`` is stored; then each must be stored exactly once."""

    async def all_there() -> bool:
        return set(expected) <= set(await subjects(tenant, inbox_id))

    await wait_until(all_there, f"{expected} stored")
    assert await subjects(tenant, inbox_id) == sorted(expected)


async def test_an_inbox_on_dovecot_is_verified_active_and_its_round_trip_passes(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "user0@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    inbox = await inbox_state(tenant, inbox_id)
    assert inbox["status"] == "ACTIVE", inbox
    assert inbox["receiving"]["idleSupported"] is True
    [created] = (await tenant.client(TESTS, {"id": inbox_id})).data["emailInbox"][
        "connectionTests"
    ]["edges"]
    assert created["node"]["state"] == "PASSED", created
    assert created["node"]["smtp"] == {"ok": True, "code": "OK"}
    assert created["node"]["imap"] == {"ok": True, "code": "OK"}
    # A real message through Dovecot's submission, its relay and LMTP, found over IMAP.
    relayed = len(dovecot.relay.messages)
    queued = await tenant.client(TEST_CONNECTION, {"id": inbox_id})
    assert queued.data["testConnection"]["__typename"] == "TestConnectionSuccess", queued.data

    async def finished() -> dict[str, Any] | None:
        tests = (await tenant.client(TESTS, {"id": inbox_id})).data["emailInbox"]
        node: dict[str, Any] = tests["connectionTests"]["edges"][0]["node"]
        return node if node["state"] in ("PASSED", "FAILED") else None

    test = await wait_until(finished, "the round trip finished")
    assert test["state"] == "PASSED", (test, dovecot.log())
    assert test["roundTrip"]["ok"] and test["roundTrip"]["received"], test
    assert test["roundTrip"]["deleted"] is True
    assert len(dovecot.relay.messages) == relayed + 1
    assert dovecot.relay.messages[-1].rcpt_tos == [user]


async def test_mail_delivered_over_lmtp_reaches_a_subscriber_once_and_old_mail_stays_out(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "user1@example.test"
    dovecot.deliver(user, mail("old news"))
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    ws = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(RECEIVED, {"id": inbox_id})
        assert receiving.stack.state.hub is not None
        await subscribed(receiving.stack.state.hub, tenant.workspace.id)
        dovecot.deliver(user, mail("fresh"))
        message = await ws.next_payload(sub, timeout=30)
        assert message["type"] == "next", message
        assert message["payload"]["data"]["messageReceived"]["subject"] == "fresh"
    finally:
        await ws.close()
    # Later mail wakes the watcher again; "fresh" is not stored a second time by that read.
    dovecot.deliver(user, mail("later"))
    await stored(tenant, inbox_id, "fresh", "later")


async def test_a_dovecot_restart_while_watched_loses_and_repeats_nothing(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "user2@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    dovecot.deliver(user, mail("before the restart"))
    await stored(tenant, inbox_id, "before the restart")
    dovecot.stop()  # cuts the watcher's sessions; LMTP is down with the rest

    async def noticed() -> bool:
        return await watch_state(tenant, inbox_id) != "IDLE"

    await wait_until(noticed, "the watcher noticed Dovecot going away")
    # Both blocking, on the test's own event loop: the watcher cannot reconnect in between,
    # so this message is on the server before the watcher's first look after the restart.
    dovecot.start()
    dovecot.deliver(user, mail("right after the restart"))
    await stored(tenant, inbox_id, "before the restart", "right after the restart")
    await wait_until(
        lambda: _in_idle(tenant, inbox_id), "the watcher back in IDLE after the restart"
    )
    dovecot.deliver(user, mail("after the restart"))
    await stored(
        tenant, inbox_id, "before the restart", "right after the restart", "after the restart"
    )


async def _in_idle(tenant: Any, inbox_id: str) -> bool:
    return await watch_state(tenant, inbox_id) == "IDLE"


def _logins(dovecot: Dovecot, user: str) -> list[str]:
    return [
        line
        for line in dovecot.log_file.read_text().splitlines()
        if "imap-login: Info: Login:" in line and f"user=<{user}>" in line
    ]


@pytest.mark.parametrize(("security", "user"), [("STARTTLS", "user3"), ("TLS", "user4")])
async def test_receiving_works_over_starttls_and_implicit_tls(
    receiving: Verifier, dovecot: Dovecot, security: str, user: str
) -> None:
    address = f"{user}@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, address, security)
    dovecot.deliver(address, mail(f"over {security}"))
    await stored(tenant, inbox_id, f"over {security}")
    assert (await inbox_state(tenant, inbox_id))["receiving"]["lastError"] is None
    # Dovecot counts loopback as secure and would take a password in the clear ("secured"
    # in its log): every login of this user was made inside TLS.
    logins = _logins(dovecot, address)
    assert logins and all(", TLS," in line for line in logins), logins


async def test_a_received_message_is_still_unseen_on_dovecot(
    receiving: Verifier, dovecot: Dovecot
) -> None:
    user = "user5@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(tenant, dovecot, user)
    dovecot.deliver(user, mail("leave me unread"))
    await stored(tenant, inbox_id, "leave me unread")
    # A session of its own, read-only (EXAMINE), as the user's mail client would look.
    flags = await asyncio.to_thread(_flags, dovecot, user)
    assert len(flags) == 1, flags
    assert b"\\Seen" not in flags[0] and b"\\Deleted" not in flags[0], flags


def _flags(dovecot: Dovecot, user: str) -> list[bytes]:
    """Each message's FETCH FLAGS answer in ``user``'s INBOX."""
    context = ssl.create_default_context(cafile=dovecot.ca_file)
    with imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context) as client:
        client.login(user, PASSWORD)
        assert client.select("INBOX", readonly=True)[0] == "OK"
        result, lines = client.uid("FETCH", "1:*", "(FLAGS)")
        assert result == "OK", lines
        return [line for line in lines if isinstance(line, bytes)]
