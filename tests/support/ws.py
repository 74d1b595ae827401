"""A graphql-transport-ws client for tests, over a real websocket."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

PROTOCOL = "graphql-transport-ws"


class WSClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)
        # Messages that arrived for one subscription while another was being read.
        self._pending: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    async def connect(cls, base_url: str, key: str | None, *, ack: bool = True) -> WSClient:
        url = base_url.replace("http://", "ws://") + "/graphql"
        connection = await websockets.connect(url, subprotocols=[PROTOCOL], compression=None)
        client = cls(connection)
        payload = {"authorization": f"Bearer {key}"} if key else {}
        await client.send({"type": "connection_init", "payload": payload})
        if ack:
            message = await client.receive()
            assert message["type"] == "connection_ack", message
        return client

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        # graphql-transport-ws messages are text frames; browsers and graphql-ws clients
        # do not read binary ones.
        assert isinstance(raw, str), f"binary websocket frame: {raw!r}"
        return json.loads(raw)  # type: ignore[no-any-return]

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        sub_id = str(next(self._ids))
        await self.send(
            {
                "id": sub_id,
                "type": "subscribe",
                "payload": {"query": query, "variables": variables or {}},
            }
        )
        return sub_id

    async def next_payload(self, sub_id: str, timeout: float = 10) -> dict[str, Any]:
        """The next message for ``sub_id``: a ``next`` payload, or the ``complete``/``error``."""
        if self._pending.get(sub_id):
            return self._pending[sub_id].pop(0)
        while True:
            message = await self.receive(timeout)
            if message.get("type") == "ping":
                await self.send({"type": "pong"})
                continue
            if message.get("id") == sub_id:
                return message
            self._pending.setdefault(str(message.get("id")), []).append(message)

    async def stream(self, sub_id: str, timeout: float = 10) -> AsyncIterator[dict[str, Any]]:
        while True:
            message = await self.next_payload(sub_id, timeout)
            yield message
            if message["type"] in ("complete", "error"):
                return

    async def close(self) -> None:
        await self.connection.close()
