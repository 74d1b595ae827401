"""The sending worker keeps each inbox's SMTP and Sent-folder IMAP sessions between messages
(INBOXD_SEND_SESSION_LINGER_SECONDS): a real inboxd stack with its worker, aiosmtpd and pymap
on loopback, logins and QUITs counted on the servers' side."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.inbox_reads import READ_INBOX_SQL
from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.sending.test_outbox_worker import (
    PASSWORD,
    active_inbox,
    delivered,
    imap_client,
    in_sent,
    mail_servers,
    send,
    settled,
)
from tests.storage.test_query_counts import recording
from tests.support.mailservers import ImapServer, MailCerts, SmtpServer
from tests.support.waiting import loop_turn, wait_until

USERS = {f"kept{n}@example.test": PASSWORD for n in range(3)}


@pytest.fixture
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with mail_servers(certs, USERS) as running:
        yield running


@pytest.fixture
async def sender(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    # A linger no loaded machine outlasts between two messages of a test.
    async with verifier_on(
        pg_server[0], certs, keyring, send_session_linger_seconds=120.0
    ) as running:
        yield running


async def with_sent_folder(servers: dict, certs: MailCerts, user: str) -> None:
    client = await imap_client(servers, certs, user)
    assert (await client.create("Sent")).result == "OK"
    await client.logout()


def logins(server: SmtpServer | ImapServer, user: str) -> int:
    return sum(1 for login, _ in server.logins if login == user)


async def test_an_inboxs_messages_go_out_on_one_smtp_and_one_imap_login(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    user = "kept0@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    await with_sent_folder(servers, certs, user)
    smtp, imap = servers["smtp"], servers["imap"]
    first = await settled(
        sender,
        tenant,
        (await send(tenant, inbox_id, to=["r@example.test"], subject="S", text="1"))["id"],
    )
    assert first["state"] == "SENT" and first["sentFolder"] == "Sent"
    smtp_logins, imap_logins = logins(smtp, user), logins(imap, user)
    second = await settled(
        sender,
        tenant,
        (await send(tenant, inbox_id, to=["r@example.test"], subject="S", text="2"))["id"],
    )
    assert second["state"] == "SENT" and second["sentFolder"] == "Sent"
    assert (logins(smtp, user), logins(imap, user)) == (smtp_logins, imap_logins)
    for message in (first, second):
        assert len(delivered(smtp, message["messageId"])) == 1
        assert await in_sent(servers, certs, user, message["messageId"])


async def test_stopping_the_worker_quits_its_kept_sessions(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    user = "kept1@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    await with_sent_folder(servers, certs, user)
    sent = await settled(
        sender,
        tenant,
        (await send(tenant, inbox_id, to=["r@example.test"], subject="S", text="x"))["id"],
    )
    assert sent["sentFolder"] == "Sent"
    smtp, imap = servers["smtp"], servers["imap"]
    quits = smtp.quits
    await wait_until(lambda: imap.open_sessions == 1, "only the kept Sent session open")
    outbox = sender.stack.background.outbox
    assert outbox is not None
    await outbox.stop()
    assert smtp.quits == quits + 1
    await wait_until(lambda: imap.open_sessions == 0, "the kept Sent session logged out")


SET_SIGNATURE = """mutation($id: ID!, $input: UpdateEmailInboxInput!) {
  updateEmailInbox(id: $id, input: $input) { __typename } }"""


async def test_the_worker_reads_an_inbox_again_only_when_its_version_moved(
    sender: Verifier, servers: dict
) -> None:
    tenant = await sender.tenant()
    user = "kept2@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)

    async def sent(text: str) -> dict:
        queued = await send(tenant, inbox_id, to=["r@example.test"], subject="S", text=text)
        return await settled(sender, tenant, queued["id"])

    async def reads_of_the_inbox(text: str) -> tuple[int, dict]:
        """The message sent, and how often the inbox was read meanwhile (the API's
        sendEmail reads it once: the rest is the worker's)."""
        async with recording(sender.db) as recorder:
            with recorder.counting() as counts:
                message = await sent(text)
                await loop_turn()
        read = " ".join(READ_INBOX_SQL.split())
        return sum(1 for s in counts.statements if s == read), message

    assert (await reads_of_the_inbox("first"))[0] == 2  # sendEmail's, the worker's
    assert (await reads_of_the_inbox("second"))[0] == 1  # the worker knew it: no read
    # A change of the inbox moves its version: the worker reads it again, and sends with it.
    changed = await tenant.client(
        SET_SIGNATURE, {"id": inbox_id, "input": {"signature": "<p>Sandra, <b>Support</b></p>"}}
    )
    assert changed.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
    reads, third = await reads_of_the_inbox("third")
    assert reads == 2
    [data] = [m.data for m in delivered(servers["smtp"], third["messageId"])]
    assert b"Support" in data and b"Sales" not in data
