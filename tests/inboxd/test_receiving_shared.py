"""A message the receiver of this process stored reaches this process's ``messageReceived``
subscribers from the row its store returned: no read per subscriber. One stored by another
process (another receiver, its own cache) is read, as before. Real pymap, real Postgres."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from inboxd.configs import receiver_config
from inboxd.receiver import Receiver
from storage.db import Database
from storage.recent_messages import RecentlyStored
from tests.conftest import Verifier
from tests.inboxd.test_receiving import append_over_imap, create_watched, mail, servers
from tests.support.mailservers import MailCerts
from tests.support.waiting import loop_turn, subscribed, wait_until
from tests.support.ws import WSClient

__all__ = ["servers"]  # the module's IMAP servers: test_receiving's fixture, run again here

RECEIVED = """
subscription($id: ID!) {
  messageReceived(inboxId: $id) {
    id subject messageId textBody receivedAt threadId seen from { address } to { address }
  }
}"""
MESSAGE = """
query($id: ID!) {
  message(id: $id) {
    id subject messageId textBody receivedAt threadId seen from { address } to { address }
  }
}"""
SET_SEEN = """
mutation($id: ID!) {
  setMessageFlags(id: $id, seen: true) { ... on SetMessageFlagsSuccess { receivedMessage { id } } }
}"""
MESSAGES = "query($id: ID!) { messages(inboxId: $id, first: 5) { edges { node { id } } } }"
# storage.messages.read_message: the read a subscriber makes of a message it did not store.
READ_BACK = "FROM message WHERE id = $1 AND workspace_id = $2"


@asynccontextmanager
async def message_reads(db: Database) -> AsyncIterator[list[str]]:
    """Every read of one message by id on ``db``'s pools, while inside."""
    reads: list[str] = []

    def logged(record: Any) -> None:
        if READ_BACK in " ".join(record.query.split()):
            reads.append(record.query)

    await db.close_pool()  # fresh pools: every connection from here on carries the logger
    db.query_loggers.append(logged)
    try:
        yield reads
    finally:
        db.query_loggers.remove(logged)
        await db.close_pool()


async def test_subscribers_get_a_message_this_process_stored_without_reading_it_back(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user = "user6@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    state = receiving.stack.state
    assert state.hub is not None
    first = await WSClient.connect(receiving.stack.base_url, tenant.key)
    second = await WSClient.connect(receiving.stack.base_url, tenant.key)
    try:
        subs = [await ws.subscribe(RECEIVED, {"id": inbox_id}) for ws in (first, second)]
        await subscribed(state.hub, tenant.workspace.id, count=2)
        async with message_reads(state.db) as reads:
            await append_over_imap(servers["TLS"], certs, user, mail("shared"))
            got = [
                await ws.next_payload(sub, timeout=30)
                for ws, sub in zip((first, second), subs, strict=True)
            ]
            await loop_turn()  # asyncpg hands queries to its loggers with call_soon
            assert reads == []
    finally:
        await first.close()
        await second.close()
    received = [g["payload"]["data"]["messageReceived"] for g in got]
    assert received[0] == received[1]
    assert received[0]["subject"] == "shared"
    # What the subscribers were sent is what a read of the message gives.
    read = (await tenant.client(MESSAGE, {"id": received[0]["id"]})).data["message"]
    assert received[0] == read
    # The kept row is the message as received: a query after a change reads the change.
    await tenant.client(SET_SEEN, {"id": received[0]["id"]})
    changed = (await tenant.client(MESSAGE, {"id": received[0]["id"]})).data["message"]
    assert changed["seen"] is True and received[0]["seen"] is False


async def test_a_message_another_process_stored_is_read_for_the_subscriber(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user = "user7@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    stack = receiving.stack
    assert stack.state.hub is not None and stack.background.receiver is not None
    # Another process: a receiver with a cache of its own, on the same database.
    await stack.background.receiver.stop()
    elsewhere = dataclasses.replace(stack.state, recently_stored=RecentlyStored())
    other = Receiver(elsewhere, receiver_config(stack.settings))
    await other.start()
    ws = await WSClient.connect(stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(RECEIVED, {"id": inbox_id})
        await subscribed(stack.state.hub, tenant.workspace.id)
        async with message_reads(stack.state.db) as reads:
            await append_over_imap(servers["TLS"], certs, user, mail("from elsewhere"))
            got = await ws.next_payload(sub, timeout=30)
            await loop_turn()
            assert len(reads) == 1, reads
    finally:
        await ws.close()
        await other.stop()
        stack.background.receiver = Receiver(stack.state, receiver_config(stack.settings))
        await stack.background.receiver.start()
    received = got["payload"]["data"]["messageReceived"]
    assert received["subject"] == "from elsewhere"
    kept = uuid.UUID(received["id"])
    assert await elsewhere.recently_stored.received(kept, tenant.workspace.id) is not None
    assert await stack.state.recently_stored.received(kept, tenant.workspace.id) is None
    read = (await tenant.client(MESSAGE, {"id": received["id"]})).data["message"]
    assert received == read


async def test_a_process_without_subscribers_of_the_workspace_keeps_no_row(
    receiving: Verifier, servers: dict[str, Any], certs: MailCerts
) -> None:
    user = "user8@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    recent = receiving.stack.state.recently_stored
    before = len(recent)
    await append_over_imap(servers["TLS"], certs, user, mail("nobody listens"))

    async def stored() -> bool:
        result = await tenant.client(MESSAGES, {"id": inbox_id})
        return bool(result.data["messages"]["edges"])

    await wait_until(stored, "the message stored")
    assert len(recent) == before
