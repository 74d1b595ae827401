"""graphql-ws's PROTOCOL.md, rule by rule, where inboxd once broke it: ``operationName`` in
documents with several operations, a null ``connection_init`` payload, and a subscription's
first use of a document (it must be served like any later one). Real websockets, real app."""

from __future__ import annotations

import uuid

import pytest

from tests.inboxd.test_ws import closed_with, create_inbox, raw, rename, ws_server
from tests.support.ws import WSClient

WATCH = "subscription Watch($id: ID!) { emailInboxStatus(id: $id) { id name version } }"
OTHER = "query Other { viewer { inboxUsage } }"


async def subscribe_named(
    ws: WSClient, query: str, operation_name: str, variables: dict[str, object]
) -> str:
    sub = f"named-{uuid.uuid4().hex[:6]}"
    await ws.send(
        {
            "id": sub,
            "type": "subscribe",
            "payload": {"query": query, "operationName": operation_name, "variables": variables},
        }
    )
    return sub


@pytest.mark.parametrize(
    "document",
    [
        f"{OTHER}\n{WATCH}",  # as GraphiQL sends it: every operation of the editor
        f"{WATCH}\n{OTHER}",
        # Through a fragment: the general path (Strawberry's stream), not a shared feed.
        f"{OTHER}\nsubscription Watch($id: ID!) {{ ...W }}\n"
        "fragment W on Subscription { emailInboxStatus(id: $id) { id name version } }",
    ],
)
async def test_operation_name_chooses_the_operation(tenant, base_url, document):
    inbox = await create_inbox(tenant, f"multi-{uuid.uuid4().hex[:6]}@example.com")
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await subscribe_named(ws, document, "Watch", {"id": inbox})
        first = await ws.next_payload(sub)
        assert first["type"] == "next", first
        assert first["payload"]["data"]["emailInboxStatus"]["id"] == inbox, first
        version = await rename(tenant, inbox, "renamed")
        while True:  # a subscription, so it goes on: the next change arrives
            message = await ws.next_payload(sub)
            assert message["type"] == "next", message
            if message["payload"]["data"]["emailInboxStatus"]["version"] >= version:
                break
        assert message["payload"]["data"]["emailInboxStatus"]["name"] == "renamed"
        # And the other operation of the same document, by its name, is the query.
        query_sub = await subscribe_named(ws, document, "Other", {})
        answer = await ws.next_payload(query_sub)
        assert answer["type"] == "next" and "viewer" in answer["payload"]["data"], answer
        assert (await ws.next_payload(query_sub))["type"] == "complete"
    finally:
        await ws.close()


async def test_operation_name_is_kept_when_a_feed_falls_back(tenant, base_url):
    """No such inbox: the feed hands the subscription to the general path, which must run
    the operation the client named (it once ran the first one, and answered its data)."""
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await subscribe_named(ws, f"{OTHER}\n{WATCH}", "Watch", {"id": str(uuid.uuid4())})
        message = await ws.next_payload(sub)
        assert message["type"] == "next", message
        assert message["payload"]["data"] is None
        assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert (await ws.next_payload(sub))["type"] == "complete"
    finally:
        await ws.close()


async def test_unknown_operation_name_is_an_error_message(tenant, base_url):
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await subscribe_named(ws, f"{OTHER}\n{WATCH}", "Nope", {"id": str(uuid.uuid4())})
        code, reason = await closed_with(ws.connection)
        # Strawberry's handler closes with 4400 for an operation it cannot find.
        assert code == 4400 and "Nope" in reason, (code, reason, sub)
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "init", ['{"type": "connection_init", "payload": null}', '{"type": "connection_init"}']
)
async def test_null_or_absent_init_payload_is_allowed(base_url, init):
    """PROTOCOL.md: ``payload?: Record<string, unknown> | null``. Without a key the server
    refuses the caller (4403), not the message (4400)."""
    connection = await raw(base_url)
    try:
        await connection.send(init)
        code, _reason = await closed_with(connection)
        assert code == 4403
    finally:
        await connection.close()


async def test_first_subscriber_of_a_new_document_joins_a_feed(tenant, stack):
    """A document the server has never seen is prepared off the loop, then served by a
    shared feed exactly as later subscribers of it are."""
    inbox = await create_inbox(tenant, f"new-doc-{uuid.uuid4().hex[:6]}@example.com")
    document = (
        f"subscription Fresh{uuid.uuid4().hex[:8]}($id: ID!) "
        "{ emailInboxStatus(id: $id) { id version } }"
    )
    assert stack.app.state.graphql.schema.documents.get(document) is None
    first, second = [await WSClient.connect(stack.base_url, tenant.key) for _ in range(2)]
    try:
        sub1 = await first.subscribe(document, {"id": inbox})
        assert (await first.next_payload(sub1))["type"] == "next"
        sub2 = await second.subscribe(document, {"id": inbox})
        assert (await second.next_payload(sub2))["type"] == "next"
        feeds = ws_server(stack).feeds.following(uuid.UUID(inbox))
        assert len(feeds) == 1 and len(feeds[0].members) == 2
    finally:
        await first.close()
        await second.close()
