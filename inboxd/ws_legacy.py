"""The legacy graphql-ws protocol, served by Strawberry's handler (INBOXD_LEGACY_GRAPHQL_WS):
its connections as the key sweeper sees them, and its messages' errors masked as all others."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import Send
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from inboxd.ws_protocol import Closable
from schema.pipeline import mask_error


class LegacyConnection(Closable):
    """A legacy graphql-ws connection (Strawberry's handler), as the key sweeper sees it."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._closing: asyncio.Task[None] | None = None

    def close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class LegacyHandler(BaseGraphQLWSHandler[Any, None]):
    """Strawberry's graphql-ws handler, whose data messages carry masked errors."""

    async def send_data_message(self, execution_result: Any, operation_id: str) -> None:
        if execution_result.errors:
            request_id = getattr(self.context, "request_id", None) or "unknown"
            execution_result.errors = [mask_error(e, request_id) for e in execution_result.errors]
        await super().send_data_message(execution_result, operation_id)
