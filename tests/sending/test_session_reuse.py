"""The sending worker keeps each inbox's SMTP and Sent-folder IMAP sessions between messages
(INBOXD_SEND_SESSION_LINGER_SECONDS): a real inboxd stack with its worker, aiosmtpd and pymap
on loopback, logins and QUITs counted on the servers' side."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.sending.test_outbox_worker import (
    PASSWORD,
    active_inbox,
    delivered,
    imap_client,
    in_sent,
    send,
    settled,
)
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer
from tests.support.waiting import wait_until

USERS = {f"kept{n}@example.test": PASSWORD for n in range(3)}


@pytest.fixture
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.TLS, USERS, ssl_context=ctx) as smtp,
        ImapServer(ImapMode.TLS, USERS, ssl_context=ctx) as imap,
    ):
        yield {"smtp": smtp, "imap": imap}


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
