"""inboxd's graphql-transport-ws server (inboxd/ws.py): the protocol, shared emailInboxStatus
feeds, the key sweeper, and clients that do not read, against the real app over uvicorn."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from inboxd.ws import WebSocketServer
from storage import api_keys
from tests.conftest import Stack, make_settings, running_stack
from tests.schema.fragments import CREATE, DELETE, minimal_input
from tests.support.waiting import wait_until
from tests.support.ws import PROTOCOL, WSClient

FIELDS = (
    "id name status statusReason version tags signature smtp { host port hasPassword } "
    "connectionTests(first: 3) { edges { node { id state } } }"
)
STATUS = f"subscription Status($id: ID!) {{ emailInboxStatus(id: $id) {{ {FIELDS} }} }}"
# The same selection behind a fragment: served by the general path (Strawberry), not a feed.
STATUS_GENERAL = (
    "subscription Status($id: ID!) { ...Watch } "
    f"fragment Watch on Subscription {{ emailInboxStatus(id: $id) {{ {FIELDS} }} }}"
)
RENAME = (
    "mutation($id: ID!, $name: String!) { updateEmailInbox(id: $id, input: {name: $name}) "
    "{ __typename ... on UpdateEmailInboxSuccess { inbox { version } } } }"
)


def ws_server(stack: Stack) -> WebSocketServer:
    server: WebSocketServer = stack.app.state.graphql.ws
    return server


async def create_inbox(tenant: Any, email: str, **extra: object) -> str:
    created = await tenant.client(CREATE, {"input": minimal_input(email, **extra)})
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return str(payload["inbox"]["id"])


async def rename(tenant: Any, inbox_id: str, name: str) -> int:
    renamed = await tenant.client(RENAME, {"id": inbox_id, "name": name})
    return int(renamed.data["updateEmailInbox"]["inbox"]["version"])


async def next_version(ws: WSClient, sub: str, at_least: int) -> dict[str, Any]:
    """The first ``next`` payload with version >= at_least (a feed may skip versions)."""
    while True:
        message = await ws.next_payload(sub)
        assert message["type"] == "next", message
        inbox = message["payload"]["data"]["emailInboxStatus"]
        if inbox["version"] >= at_least:
            return dict(message["payload"])


async def raw(base_url: str) -> websockets.ClientConnection:
    url = base_url.replace("http://", "ws://") + "/graphql"
    return await websockets.connect(url, subprotocols=[PROTOCOL], compression=None)


async def closed_with(connection: websockets.ClientConnection) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(connection.recv(), 5)
    assert connection.close_code is not None
    return connection.close_code, connection.close_reason or ""


# --- the protocol -------------------------------------------------------------------------


async def test_ping_pong_and_text_frames(tenant, base_url):
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}  # receive() also asserts a text frame
        await ws.send({"type": "pong"})  # unsolicited pongs are fine
        await ws.send({"type": "ping", "payload": {"at": 1}})
        assert await ws.receive() == {"type": "pong"}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        (["not json"], 4400, "WebSocket message must be valid JSON"),
        ([b'{"type": "connection_init"}'], 4400, "WebSocket message type must be text"),
        (['{"payload": {}}'], 4400, "Failed to parse message"),
        (['["connection_init"]'], 4400, "Failed to parse message"),
        (['{"type": "hello"}'], 4400, "Unknown message type: hello"),
        (['{"type": "connection_init", "payload": 3}'], 4400, "Invalid connection init payload"),
        (
            ['{"id": "1", "type": "subscribe", "payload": {"query": "subscription { x }"}}'],
            4401,
            "Unauthorized",
        ),
    ],
)
async def test_bad_messages_close_the_socket(base_url, frames, code, reason):
    connection = await raw(base_url)
    try:
        for frame in frames:
            await connection.send(frame)
        assert await closed_with(connection) == (code, reason)
    finally:
        await connection.close()


async def test_second_init_and_duplicate_ids_close_the_socket(tenant, base_url):
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        await ws.send({"type": "connection_init", "payload": {}})
        assert await closed_with(ws.connection) == (4429, "Too many initialisation requests")
    finally:
        await ws.close()
    inbox = await create_inbox(tenant, "dup@example.com")
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await ws.subscribe(STATUS, {"id": inbox})
        assert (await ws.next_payload(sub))["type"] == "next"
        await ws.send(
            {"id": sub, "type": "subscribe", "payload": {"query": STATUS, "variables": {}}}
        )
        assert await closed_with(ws.connection) == (4409, f"Subscriber for {sub} already exists")
    finally:
        await ws.close()


async def test_syntax_error_closes_and_validation_error_is_an_error_message(tenant, base_url):
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await ws.subscribe("subscription { emailInboxStatus(id: ) { id } }")
        code, _ = await closed_with(ws.connection)
        assert code == 4400
    finally:
        await ws.close()
    ws = await WSClient.connect(base_url, tenant.key)
    try:
        sub = await ws.subscribe("subscription { emailInboxStatus(id: 1) { nope } }")
        message = await ws.next_payload(sub)
        assert message["type"] == "error"
        assert "nope" in message["payload"][0]["message"]
        # The socket stays usable.
        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}
    finally:
        await ws.close()


# --- shared feeds -------------------------------------------------------------------------


async def test_one_change_reaches_every_member_of_a_feed(tenant, stack):
    inbox = await create_inbox(tenant, "group@example.com")
    clients = [await WSClient.connect(stack.base_url, tenant.key) for _ in range(5)]
    try:
        subs = [await ws.subscribe(STATUS, {"id": inbox}) for ws in clients]
        firsts = [await next_version(ws, sub, 1) for ws, sub in zip(clients, subs, strict=True)]
        assert all(first == firsts[0] for first in firsts)
        feeds = ws_server(stack).feeds.following(uuid.UUID(inbox))
        assert len(feeds) == 1 and len(feeds[0].members) == 5
        version = await rename(tenant, inbox, "renamed once")
        changed = [
            await next_version(ws, sub, version) for ws, sub in zip(clients, subs, strict=True)
        ]
        assert all(c == changed[0] for c in changed)
        assert changed[0]["data"]["emailInboxStatus"]["name"] == "renamed once"
    finally:
        for ws in clients:
            await ws.close()
    await wait_until(
        lambda: not ws_server(stack).feeds.following(uuid.UUID(inbox)),
        "the feed closed with its last member",
    )


async def test_feed_payload_is_what_the_general_path_sends(tenant, stack):
    inbox = await create_inbox(tenant, "same@example.com")
    ws = await WSClient.connect(stack.base_url, tenant.key)
    try:
        shared = await ws.subscribe(STATUS, {"id": inbox})
        general = await ws.subscribe(STATUS_GENERAL, {"id": inbox})
        first_shared = await next_version(ws, shared, 1)
        first_general = await next_version(ws, general, 1)
        feeds = ws_server(stack).feeds.following(uuid.UUID(inbox))
        assert len(feeds) == 1 and len(feeds[0].members) == 1  # the fragment's is not a feed
        assert first_shared == first_general
        assert first_shared["data"]["emailInboxStatus"]["connectionTests"]["edges"]
        version = await rename(tenant, inbox, "renamed for both")
        assert await next_version(ws, shared, version) == await next_version(ws, general, version)
        # Not found, through the feed and through the general path: the same error.
        missing = str(uuid.uuid4())
        for query in (STATUS, STATUS_GENERAL):
            sub = await ws.subscribe(query, {"id": missing})
            message = await ws.next_payload(sub)
            errors = (
                message["payload"] if message["type"] == "error" else message["payload"]["errors"]
            )
            assert errors[0]["extensions"]["code"] == "NOT_FOUND", message
    finally:
        await ws.close()


async def test_delete_completes_and_complete_unsubscribes(tenant, stack):
    inbox = await create_inbox(tenant, "gone@example.com")
    ws = await WSClient.connect(stack.base_url, tenant.key)
    try:
        kept = await ws.subscribe(STATUS, {"id": inbox})
        left = await ws.subscribe(STATUS, {"id": inbox})
        await next_version(ws, kept, 1)
        await next_version(ws, left, 1)
        await ws.send({"id": left, "type": "complete"})
        version = await rename(tenant, inbox, "after complete")
        await next_version(ws, kept, version)
        deleted = await tenant.client(DELETE, {"id": inbox})
        assert deleted.data["deleteEmailInbox"]["__typename"] == "DeleteEmailInboxSuccess"
        assert (await ws.next_payload(kept))["type"] == "complete"
        # ``left`` got nothing after its complete: no message with its id is waiting.
        await ws.send({"type": "ping"})
        assert await ws.receive() == {"type": "pong"}
        assert not ws._pending.get(left)
        # The id is free again.
        again = await ws.subscribe(STATUS_GENERAL, {"id": inbox})
        assert (await ws.next_payload(again))["type"] in ("error", "next")
    finally:
        await ws.close()


def _client_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _silent_subscriber(base_url: str, key: str, inbox: str, subscriptions: int) -> socket.socket:
    """A client that subscribes and then never reads: its receive buffer is tiny, so the
    server's sends to it soon have to wait."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    nonce = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
    sock.sendall(_client_frame(json.dumps(init).encode()))
    for n in range(subscriptions):
        message = {
            "id": str(n),
            "type": "subscribe",
            "payload": {"query": STATUS, "variables": {"id": inbox}},
        }
        sock.sendall(_client_frame(json.dumps(message).encode()))
    return sock


async def test_clients_that_stop_reading_or_vanish_do_not_hold_up_the_others(tenant, stack):
    # ~19 KB per message: the silent client's buffers fill within a few changes.
    inbox = await create_inbox(tenant, "slow@example.com", signature="<p>" + "s" * 19_000 + "</p>")
    silent = await asyncio.to_thread(_silent_subscriber, stack.base_url, tenant.key, inbox, 20)
    vanished = await asyncio.to_thread(_silent_subscriber, stack.base_url, tenant.key, inbox, 1)
    reader = await WSClient.connect(stack.base_url, tenant.key)
    try:
        sub = await reader.subscribe(STATUS, {"id": inbox})
        await next_version(reader, sub, 1)

        def all_in_the_feed() -> bool:
            feeds = ws_server(stack).feeds.following(uuid.UUID(inbox))
            return bool(feeds) and len(feeds[0].members) == 22

        await wait_until(all_in_the_feed, "all 22 subscriptions are in the feed")
        # Gone without a close: the server finds out when it writes.
        vanished.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        vanished.close()
        name = "x" * 190
        for n in range(40):
            version = await rename(tenant, inbox, f"{name}{n}")
            latest = await next_version(reader, sub, version)
            assert latest["data"]["emailInboxStatus"]["name"] == f"{name}{n}"
    finally:
        await reader.close()
        silent.close()
    await wait_until(
        lambda: ws_server(stack).feeds.following(uuid.UUID(inbox)) == [],
        "the feed closed once its members were gone",
    )


# --- the key sweeper ----------------------------------------------------------------------


@asynccontextmanager
async def rechecking_stack(database_url, certs, keyring) -> AsyncIterator[Stack]:
    settings = make_settings(database_url, certs, None, ws_key_recheck_seconds=0.2)
    async with running_stack(settings, keyring, worker=False) as stack:
        yield stack


async def test_sweeper_closes_every_connection_of_a_revoked_key(
    database_url, certs, keyring, make_tenant, db
):
    tenant, other = await make_tenant(), await make_tenant()
    async with rechecking_stack(database_url, certs, keyring) as stack:
        created = await WSClient.connect(stack.base_url, tenant.key)
        await created.close()
        inbox = await create_inbox(tenant, "revoked@example.com")
        other_inbox = await create_inbox(other, "kept@example.com")
        feed_ws = await WSClient.connect(stack.base_url, tenant.key)
        events_ws = await WSClient.connect(stack.base_url, tenant.key)
        others_ws = await WSClient.connect(stack.base_url, other.key)
        try:
            feed_sub = await feed_ws.subscribe(STATUS, {"id": inbox})
            await next_version(feed_ws, feed_sub, 1)
            await events_ws.subscribe("subscription { emailInboxEvents { kind } }")
            others_sub = await others_ws.subscribe(STATUS, {"id": other_inbox})
            await next_version(others_ws, others_sub, 1)
            async with db.connection() as connection:
                await api_keys.revoke_api_key(connection, tenant.key)
            for ws in (feed_ws, events_ws):
                assert await closed_with(ws.connection) == (4403, "API key revoked")
            # Another key's connection stays open and keeps hearing its changes.
            version = await rename(other, other_inbox, "still here")
            await next_version(others_ws, others_sub, version)
            assert ws_server(stack).open_connections == 1
        finally:
            for ws in (feed_ws, events_ws, others_ws):
                with contextlib.suppress(Exception):
                    await ws.close()
