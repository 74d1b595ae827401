"""graphql-transport-ws, lean enough for ten thousand subscribers in one process.

The protocol (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md) as Strawberry's
handler speaks it, close codes and reasons included, without its per-connection cost: no task
besides the ASGI server's own per connection (the init timeout is a timer), no queue, and no
task or async generator per ``emailInboxStatus`` subscription: those join a shared feed
(``schema.subscription.StatusFeeds``) that reads, executes and encodes once per change. Other
operations (``connectionTest``, ``emailInboxEvents``, queries, and whatever a feed cannot
serve) run Strawberry's ``schema.stream`` in a task, as before.

Messages to one client go out in order and never make another client wait: a send that would
block (the client reads slowly) is finished by a task of that connection alone, and meanwhile
its newer ``next`` messages replace older unsent ones of the same subscription.

A revoked API key is noticed by one process-wide sweeper: every ``ws_key_recheck_seconds`` one
query checks all keys with open connections, and their connections close with 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from inboxd.logs import get_logger
from inboxd.settings import Settings
from resolvers.auth import (
    WS_KEY_UNCHECKABLE,
    ConnectionRefused,
    check_key,
    key_from_connection_params,
    refuse_connection,
)
from resolvers.state import AppState
from schema import InboxdSchema
from schema.context import Context
from schema.documents import Document
from schema.feeds import StatusFeed, StatusFeeds
from schema.pipeline import formatted
from storage import api_keys
from storage.api_keys import Principal
from storage.db import UNAVAILABLE_ERRORS

log = get_logger("inboxd.ws")
PROTOCOL = "graphql-transport-ws"
LIMIT_REACHED = orjson.dumps([GraphQLError("Subscription limit reached").formatted]).decode()


class Closable:
    """A connection the key sweeper can close."""

    def close(self, code: int, reason: str) -> None:
        raise NotImplementedError


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
                async with self.state.db.connection() as connection:
                    active = await api_keys.active_api_keys(connection, list(self._keys))
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


class Member:
    """A subscription served by a shared feed: three references, no task."""

    __slots__ = ("connection", "feed", "id")

    def __init__(self, connection: Connection, op_id: str) -> None:
        self.connection = connection
        self.id = op_id
        self.feed: StatusFeed | None = None

    def next(self, payload: str) -> None:
        self.connection.post_next(self.id, payload)

    def complete(self) -> None:
        if self.connection.operations.get(self.id) is self:
            del self.connection.operations[self.id]
            self.connection.post_text(orjson.dumps({"id": self.id, "type": "complete"}).decode())

    def fallback(
        self, query: str, operation_name: str | None, variables: dict[str, Any] | None
    ) -> None:
        if self.connection.operations.get(self.id) is self:
            del self.connection.operations[self.id]
            self.connection.start_operation(self.id, query, variables, operation_name)


class Operation:
    """A subscription (or query) run by Strawberry in a task of its own."""

    __slots__ = ("id", "task")

    def __init__(self, op_id: str) -> None:
        self.id = op_id
        self.task: asyncio.Task[None] | None = None


class ProtocolError(Exception):
    """The client broke the protocol: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection(Closable):
    __slots__ = (
        "_backlog",
        "_flusher",
        "_timer",
        "acked",
        "closing",
        "context",
        "gone",
        "initialised",
        "operations",
        "principal",
        "scope",
        "send",
        "server",
    )

    def __init__(self, server: WebSocketServer, scope: Scope, send: Send) -> None:
        self.server = server
        self.scope = scope
        self.send = send
        self.principal: Principal | None = None
        self.operations: dict[str, Member | Operation] = {}
        self.initialised = False
        self.acked = False
        self.closing = False
        # The client went away (a send failed); its disconnect is on its way to run().
        self.gone = False
        # Strawberry's per-connection context, made for the first general operation only.
        self.context: Context | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Messages waiting behind a send that could not complete at once (with the id of
        # the subscription a ``next`` is for); None: no send is waiting.
        self._backlog: list[tuple[str | None, Message]] | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, receive: Receive) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await self.send({"type": "websocket.accept", "subprotocol": PROTOCOL})
        # The handshake's headers are not read again (the key comes in connection_init);
        # dropped, they free ~1 KiB for as long as the connection stays open.
        self.scope["headers"] = []
        self._timer = asyncio.get_running_loop().call_later(
            self.server.settings.ws_connection_init_timeout_seconds, self._init_timed_out
        )
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message["type"] == "websocket.receive" and not self.closing:
                    try:
                        await self._on_message(message)
                    except ProtocolError as exc:
                        self.close(exc.code, exc.reason)
        finally:
            self._shutdown()

    # --- incoming ------------------------------------------------------------------------

    async def _on_message(self, message: Message) -> None:
        text = message.get("text")
        if text is None:
            raise ProtocolError(4400, "WebSocket message type must be text")
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolError(4400, "WebSocket message must be valid JSON") from None
        if not isinstance(data, dict) or "type" not in data:
            raise ProtocolError(4400, "Failed to parse message")
        kind = data["type"]
        if kind == "connection_init":
            await self._on_init(data)
        elif kind == "ping":
            self.post_text('{"type":"pong"}')
        elif kind == "pong":
            pass
        elif kind == "subscribe":
            self._on_subscribe(data)
        elif kind == "complete":
            self._on_complete(data)
        else:
            raise ProtocolError(4400, f"Unknown message type: {kind}")

    async def _on_init(self, data: dict[str, Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        payload = data.get("payload")
        if payload is None:  # absent or null: the protocol allows both
            payload = {}
        if not isinstance(payload, dict):
            raise ProtocolError(4400, "Invalid connection init payload")
        if self.initialised:
            raise ProtocolError(4429, "Too many initialisation requests")
        self.initialised = True
        try:
            self.principal = await self.server.admit(payload, self)
        except ConnectionRefused as exc:
            raise ProtocolError(4403, exc.reason) from None
        if self.closing:  # revoked or shut down while we asked
            return
        self.post_text('{"type":"connection_ack"}')
        self.acked = True

    def _on_subscribe(self, data: dict[str, Any]) -> None:
        if not self.acked:
            raise ProtocolError(4401, "Unauthorized")
        op_id, payload = data.get("id"), data.get("payload")
        if not isinstance(op_id, str) or not isinstance(payload, dict):
            raise ProtocolError(4400, "Failed to parse message")
        query = payload.get("query")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(operation_name, str | None)
        ):
            raise ProtocolError(4400, "Failed to parse message")
        if op_id in self.operations:
            raise ProtocolError(4409, f"Subscriber for {op_id} already exists")
        # As Strawberry counts it: every operation in flight, not only subscriptions.
        if len(self.operations) >= self.server.settings.ws_max_subscriptions_per_connection:
            self.post_text(f'{{"id":{_json(op_id)},"type":"error","payload":{LIMIT_REACHED}}}')
            return
        document = self.server.schema.documents.get(query)
        if document is None:
            # A document not seen before is prepared off the event loop, in the operation's
            # own task; the subscription then starts as any other.
            operation = Operation(op_id)
            self.operations[op_id] = operation
            operation.task = asyncio.create_task(
                self._prepare_then_subscribe(operation, query, variables, operation_name)
            )
            return
        self._subscribe(op_id, document, variables, operation_name)

    async def _prepare_then_subscribe(
        self,
        operation: Operation,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> None:
        document = await self.server.schema.documents.prepare(query)
        if self.operations.get(operation.id) is operation:
            del self.operations[operation.id]
            self._subscribe(operation.id, document, variables, operation_name)

    def _subscribe(
        self,
        op_id: str,
        document: Document,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> None:
        """Serve a subscribe message: by a shared feed if one can, else by Strawberry."""
        assert self.principal is not None
        plan = self.server.feeds.plan(document, operation_name)
        if plan is not None:
            member = Member(self, op_id)
            self.operations[op_id] = member
            member.feed = self.server.feeds.join(plan, self.principal, variables, member)
            if member.feed is not None:
                return
            del self.operations[op_id]
        self.start_operation(op_id, document.query, variables, operation_name)

    def _on_complete(self, data: dict[str, Any]) -> None:
        op_id = data.get("id")
        if not isinstance(op_id, str):
            raise ProtocolError(4400, "Failed to parse message")
        self._end_operation(op_id)

    def _end_operation(self, op_id: str) -> None:
        operation = self.operations.pop(op_id, None)
        if isinstance(operation, Member):
            if operation.feed is not None:
                operation.feed.leave(operation)
        elif operation is not None and operation.task is not None:
            operation.task.cancel()

    def _init_timed_out(self) -> None:
        self._timer = None
        if not self.initialised:
            self.close(4408, "Connection initialisation timeout")

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        for op_id in list(self.operations):
            self._end_operation(op_id)
        self._post({"type": "websocket.close", "code": code, "reason": reason})

    def _shutdown(self) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for op_id in list(self.operations):
            self._end_operation(op_id)
        if self._flusher is not None:
            self._flusher.cancel()
        if self.principal is not None:
            self.server.release(self.principal, self)

    # --- general operations (Strawberry) -------------------------------------------------

    def start_operation(
        self,
        op_id: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> None:
        operation = Operation(op_id)
        self.operations[op_id] = operation
        operation.task = asyncio.create_task(
            self._run_operation(operation, query, variables, operation_name)
        )

    def _general_context(self) -> Context:
        if self.context is None:
            client = self.scope.get("client")
            self.context = Context(
                state=self.server.state,
                principal=self.principal,
                request_id=uuid.uuid4().hex,
                client_address=client[0] if client else None,
            )
        return self.context

    def _request_id(self) -> str:
        return self._general_context().request_id

    async def _run_operation(
        self,
        operation: Operation,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> None:
        """Strawberry's ``run_operation``: the results of ``schema.stream`` as ``next``
        messages, then ``complete``; errors before execution as one ``error`` message."""
        try:
            source = await self.server.schema.stream(
                query,
                variable_values=variables,
                context_value=self._general_context(),
                operation_name=operation_name,
            )
            first = True
            async with contextlib.aclosing(source):
                async for result in source:
                    if first and isinstance(result, PreExecutionError):
                        assert result.errors
                        reason = _close_reason(result.errors[0])
                        if reason is not None:
                            self.operations.pop(operation.id, None)
                            self.close(4400, reason)
                            return
                        self._finish(
                            operation, "error", formatted(result.errors, self._request_id())
                        )
                        return
                    if not isinstance(result, ExecutionResult):
                        # @defer/@stream: graphql-transport-ws has no message for them.
                        error = GraphQLError(
                            "Incremental delivery is not supported over graphql-transport-ws"
                        )
                        self._finish(operation, "error", formatted([error], self._request_id()))
                        return
                    first = False
                    await self._send_next(operation, result)
            self._finish(operation, "complete", None)
        except asyncio.CancelledError:
            raise
        except GraphQLSyntaxError as exc:
            # Raised, not returned, when the parser cache extension parses: the client's
            # mistake all the same, answered as Strawberry answers an unparsable document.
            self.operations.pop(operation.id, None)
            self.close(4400, exc.message)
        except Exception:
            log.exception("websocket operation failed", operation_id=operation.id)
            self._finish(operation, "complete", None)

    async def _send_next(self, operation: Operation, result: ExecutionResult) -> None:
        if self.operations.get(operation.id) is not operation:
            return
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = formatted(result.errors, self._request_id())
        if result.extensions:
            payload["extensions"] = result.extensions
        self.post_text(orjson.dumps({"id": operation.id, "type": "next", "payload": payload}))
        # One operation's messages wait for a slow client; the other operations' do not.
        flusher = self._flusher
        if flusher is not None:
            await asyncio.shield(flusher)

    def _finish(self, operation: Operation, kind: str, payload: object) -> None:
        if self.operations.get(operation.id) is not operation:
            return
        del self.operations[operation.id]
        message: dict[str, Any] = {"id": operation.id, "type": kind}
        if payload is not None:
            message["payload"] = payload
        self.post_text(orjson.dumps(message))

    # --- outgoing ------------------------------------------------------------------------

    def post_next(self, op_id: str, payload: str) -> None:
        message = {
            "type": "websocket.send",
            "text": f'{{"id":{_json(op_id)},"type":"next","payload":{payload}}}',
        }
        backlog = self._backlog
        if backlog is not None:
            # A slow client gets the latest state, not every state in between.
            for index, (queued_id, _) in enumerate(backlog):
                if queued_id == op_id:
                    backlog[index] = (op_id, message)
                    return
        self._post(message, op_id)

    def post_text(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        self._post({"type": "websocket.send", "text": text})

    def _post(self, message: Message, next_for: str | None = None) -> None:
        """Send ``message`` after those posted before it, without waiting for the client."""
        if self._backlog is not None:
            self._backlog.append((next_for, message))
            return
        if self.gone:
            return
        sending = self.send(message)
        waiting: object = None
        if isinstance(sending, Coroutine):
            try:
                waiting = sending.send(None)
            except StopIteration:
                return  # sent: the common case, no task, no queue
            except Exception:  # the client is gone; its disconnect is on its way to run()
                self.gone = True
                return
        # The send must wait (the client's buffer is full): finish it in a task of this
        # connection, and queue what comes next behind it.
        self._backlog = []
        self._flusher = asyncio.create_task(self._flush(sending, waiting))

    async def _flush(self, sending: Awaitable[None], waiting: object) -> None:
        try:
            if isinstance(sending, Coroutine):
                await _resume(sending, waiting)
            else:
                await sending
            while self._backlog:
                await self.send(self._backlog.pop(0)[1])
        except asyncio.CancelledError:
            raise
        except Exception:
            self.gone = True
        finally:
            self._backlog = None
            self._flusher = None


async def _resume(coroutine: Coroutine[Any, Any, None], waiting: object) -> None:
    """Drive ``coroutine``, started by hand and suspended on ``waiting`` (what its first
    ``send(None)`` yielded), to its end, as an asyncio Task would."""
    try:
        while True:
            if isinstance(waiting, asyncio.Future):
                # The coroutine awaits this future: resume it when the future is done.
                await asyncio.wait((waiting,))
            else:  # a bare yield (asyncio.sleep(0))
                await asyncio.sleep(0)
            try:
                waiting = coroutine.send(None)
            except StopIteration:
                return
    except BaseException:
        coroutine.close()
        raise


def _json(value: str) -> str:
    return orjson.dumps(value).decode()


def _close_reason(error: GraphQLError) -> str | None:
    """Errors Strawberry answers by closing the socket (4400) instead of an ``error``."""
    if isinstance(error, GraphQLSyntaxError):
        return error.message
    if isinstance(error.original_error, CannotGetOperationTypeError):
        return error.original_error.as_http_error_reason()
    return None


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
