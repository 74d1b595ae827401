"""A Sent copy never holds up the next send: copies wait in a bounded queue for their filers
while the sending slots go on. A real inboxd stack (one sending slot) with aiosmtpd and pymap
on loopback; the Sent folder's server then stalls: a TCP peer that accepts and never answers
the TLS handshake, as a hung IMAP server does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.sending.test_outbox_worker import (
    PASSWORD,
    active_inbox,
    final,
    imap_client,
    mail_servers,
    send,
)
from tests.support.mailservers import (
    MailCerts,
    StreamServer,
)
from tests.support.waiting import wait_until

USERS = {f"queued{n}@example.test": PASSWORD for n in range(2)}


class Silent(StreamServer):
    """Accepts, reads, never says a word: every connection waits for the client to give up."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(4096):
            pass


@pytest.fixture
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with mail_servers(certs, USERS) as running, Silent() as silent:
        yield {**running, "silent": silent}


@pytest.fixture
async def sender(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    # One sending slot, so one copy held up would hold up every send after it; IMAP
    # timeouts no test waits out, so a stalled copy stays stalled until the server goes.
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        send_concurrency=1,
        imap_connect_timeout=600.0,
        imap_timeout=600.0,
    ) as running:
        yield running


async def test_sends_go_on_while_the_sent_folder_stalls_and_the_queue_is_bounded(
    sender: Verifier, servers: dict
) -> None:
    tenant = await sender.tenant()
    user = "queued0@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    # Verified against pymap; the Sent folder's server now hangs (as after a provider's
    # outage begins): the inbox's IMAP port points at the silent peer.
    async with sender.db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET imap_port = $2 WHERE id = $1",
            uuid.UUID(inbox_id),
            servers["silent"].port,
        )
    outbox = sender.stack.background.outbox
    assert outbox is not None
    first = await send(tenant, inbox_id, to=["r@example.test"], subject="First", text="x")
    assert (await final(tenant, first["id"]))["state"] == "SENT"
    await wait_until(lambda: servers["silent"].connections == 1, "the first copy's APPEND hangs")
    # The queue holds what it may (here: one copy besides the one being filed); past that a
    # copy is left due for a late filing, never held in memory.
    outbox.sender.copy_queue_bytes = 1
    later = [
        await send(tenant, inbox_id, to=["r@example.test"], subject=f"Later {n}", text="x")
        for n in range(3)
    ]
    for message in later:
        assert (await final(tenant, message["id"]))["state"] == "SENT"
    # All sent through the one slot while the first copy still waits on the silent server.
    assert servers["silent"].connections == 1
    assert set(outbox.sender.copying) == {uuid.UUID(first["id"]), uuid.UUID(later[0]["id"])}
    async with sender.db.connection() as connection:
        due = await connection.fetchval(
            "SELECT count(*) FROM outgoing_message WHERE id = ANY($1::uuid[])"
            " AND copy_due_at IS NOT NULL AND sent_folder IS NULL",
            [uuid.UUID(m["id"]) for m in later[1:]],
        )
    assert due == 2  # left to be filed late, by whichever worker
    # The silent server goes: the stalled copy fails, the queued one is tried, none is left.
    await asyncio.to_thread(servers["silent"].stop)
    await wait_until(lambda: not outbox.sender.copying, "the copy queue drained")


async def test_a_burst_is_sent_before_its_copies_are_filed(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    user = "queued1@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    client = await imap_client(servers, certs, user)
    assert (await client.create("Sent")).result == "OK"
    await client.logout()
    # At each APPEND the IMAP server reads: how many messages the SMTP server had by then.
    smtp = servers["smtp"]
    appended_after: list[int] = []

    def before(who: str, line: bytes) -> None:
        if who == user and b" APPEND " in line.upper():
            appended_after.append(sum(1 for m in smtp.messages if m.login == user))

    servers["imap"].arrive_before = before
    # Five messages due at the same moment, for the one sending slot: a burst.
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    burst = [
        await send(tenant, inbox_id, to=["r@example.test"], subject=f"Burst {n}", text="x",
                   sendAt=due)
        for n in range(5)
    ]  # fmt: skip
    for message in burst:
        assert (await final(tenant, message["id"]))["state"] == "SENT"
    outbox = sender.stack.background.outbox
    assert outbox is not None
    await wait_until(lambda: not outbox.sender.copying, "the copies filed")
    # Every copy was filed after the whole burst had reached the server, none in between.
    assert appended_after == [5] * 5
