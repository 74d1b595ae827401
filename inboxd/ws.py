"""graphql-transport-ws, lean enough for ten thousand subscribers in one process.

This module is the server: admission (API key, connection limits), the key sweeper and the
ASGI entry. One connection's protocol is ``inboxd.ws_connection``, its sending
``inboxd.ws_outbox``, and the legacy graphql-ws protocol (Strawberry's handler)
``inboxd.ws_legacy``.

A revoked API key is noticed by one process-wide sweeper: every ``ws_key_recheck_seconds`` one
query checks all keys with open connections, and their connections close with 4403.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from inboxd.logs import get_logger
from inboxd.settings import Settings
from inboxd.ws_connection import Connection
from inboxd.ws_protocol import PROTOCOL, Closable
from resolvers.auth import (
    WS_KEY_UNCHECKABLE,
    ConnectionRefused,
    check_key,
    key_from_connection_params,
    refuse_connection,
)
from resolvers.state import AppState
from schema import InboxdSchema
from schema.feeds import StatusFeeds
from storage import api_keys
from storage.api_keys import Principal
from storage.db import UNAVAILABLE_ERRORS

if TYPE_CHECKING:
    from inboxd.observe import Observer

log = get_logger("inboxd.ws")


@dataclass(eq=False)
class _Key:
    """An API key with open connections: one Principal shared by all of them."""

    principal: Principal
    connections: set[Closable] = field(default_factory=set)


class WebSocketServer:
    """The ASGI app for graphql-transport-ws websockets, and the per-key bookkeeping that
    the legacy protocol (Strawberry's handler, ``inboxd.app``) shares."""

    def __init__(self, schema: InboxdSchema, state: AppState, settings: Settings) -> None:
        self.schema = schema
        self.state = state
        self.settings = settings
        self.feeds = StatusFeeds(schema, state)
        self.observer: Observer | None = None  # set by the app when metrics or traces are on
        self._keys: dict[uuid.UUID, _Key] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @staticmethod
    def accepts(scope: Scope) -> bool:
        return PROTOCOL in scope.get("subprotocols", ())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await Connection(self, scope, send).run(receive)

    @property
    def open_connections(self) -> int:
        return sum(len(key.connections) for key in self._keys.values())

    def counts(self) -> tuple[int, dict[str, int]]:
        """Open connections, and active subscriptions by root field (for metrics)."""
        fields: dict[str, int] = {}
        for key in self._keys.values():
            for connection in key.connections:
                if isinstance(connection, Connection):
                    for field_name in connection.subscription_fields():
                        fields[field_name] = fields.get(field_name, 0) + 1
        return self.open_connections, fields

    # --- admission and the key sweeper ---------------------------------------------------

    async def admit(self, params: object, connection: Closable) -> Principal:
        """The caller of a connection_init payload, counted against its key's connection
        limit until ``release``; ConnectionRefused says why not (key, limit, no database)."""
        try:
            checked = await check_key(self.state, key_from_connection_params(params))
        except UNAVAILABLE_ERRORS:
            raise ConnectionRefused(WS_KEY_UNCHECKABLE) from None
        principal = refuse_connection(checked)
        key = self._keys.get(principal.api_key_id)
        if key is None:
            key = self._keys[principal.api_key_id] = _Key(principal)
        elif len(key.connections) >= (limit := self.settings.ws_max_connections_per_key):
            raise ConnectionRefused(f"Too many connections for this API key (limit {limit})")
        elif key.principal != principal:  # changed permissions: newer connections see them
            key.principal = principal
        key.connections.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="inboxd-ws-key-sweeper")
        return key.principal

    def release(self, principal: Principal, connection: Closable) -> None:
        key = self._keys.get(principal.api_key_id)
        if key is None:
            return
        key.connections.discard(connection)
        if not key.connections:
            del self._keys[principal.api_key_id]
        if not self._keys and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ws_key_recheck_seconds)
            try:
                async with self.state.db.connection() as database:
                    active = await api_keys.active_api_keys(database, list(self._keys))
            except UNAVAILABLE_ERRORS:
                continue  # unknown is not revoked: check again next time
            for key_id in [k for k in self._keys if k not in active]:
                for connection in list(self._keys[key_id].connections):
                    connection.close(4403, "API key revoked")


class GraphQLWebSockets:
    """ASGI middleware: graphql-transport-ws websockets on ``path`` go straight to ``server``.

    An open websocket keeps its whole chain of coroutine frames alive for as long as it
    lasts; through Starlette's middleware and routing that chain holds ~3 KiB per connection
    (an eighth of B6's budget), for nothing: none of it acts on websockets.
    """

    def __init__(self, app: ASGIApp, *, server: WebSocketServer, path: str) -> None:
        self.app = app
        self.server = server
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "websocket"
            and scope["path"] == self.path
            and self.server.accepts(scope)
        ):
            await self.server(scope, receive, send)
            return
        await self.app(scope, receive, send)
