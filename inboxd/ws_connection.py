"""One graphql-transport-ws connection: the protocol's messages, rule by rule.

The protocol (https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md) as Strawberry's
handler speaks it, close codes and reasons included, without its per-connection cost: no task
besides the ASGI server's own per connection (the init timeout is a timer), no queue, and no
task or async generator per ``emailInboxStatus`` subscription: those join a shared feed
(``schema.feeds``) that reads, executes and encodes once per change. Other operations run
Strawberry's ``schema.stream`` in a task, through the same pipeline as HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.types import Message, Receive, Scope, Send
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from inboxd.logs import get_logger
from inboxd.ws_operations import Member, Operation
from inboxd.ws_outbox import Outbox, json_string
from inboxd.ws_protocol import LIMIT_REACHED, PROTOCOL, Closable, ProtocolError, close_reason
from resolvers.auth import ConnectionRefused
from schema.context import Context
from schema.documents import Document
from schema.pipeline import formatted
from storage.api_keys import Principal

if TYPE_CHECKING:
    from inboxd.ws import WebSocketServer

log = get_logger("inboxd.ws")


class Connection(Outbox, Closable):
    __slots__ = (
        "_timer",
        "acked",
        "closing",
        "context",
        "initialised",
        "operations",
        "principal",
        "scope",
        "server",
    )

    def __init__(self, server: WebSocketServer, scope: Scope, send: Send) -> None:
        super().__init__(send)
        self.server = server
        self.scope = scope
        self.principal: Principal | None = None
        self.operations: dict[str, Member | Operation] = {}
        self.initialised = False
        self.acked = False
        self.closing = False
        # Strawberry's per-connection context, made for the first general operation only.
        self.context: Context | None = None
        self._timer: asyncio.TimerHandle | None = None

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
            self.post_text(
                f'{{"id":{json_string(op_id)},"type":"error","payload":{LIMIT_REACHED}}}'
            )
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
            observer = self.server.observer
            member = Member(self, op_id, "emailInboxStatus" if observer is not None else None)
            self.operations[op_id] = member
            member.feed = self.server.feeds.join(plan, self.principal, variables, member)
            if member.feed is not None:
                if observer is not None:
                    observer.done(document.query, operation_name, None, None, None)
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
        observer = self.server.observer
        field = observer.subscription_field(query, operation_name) if observer else None
        operation = Operation(op_id, field)
        self.operations[op_id] = operation
        operation.task = asyncio.create_task(
            self._run_operation(operation, query, variables, operation_name)
        )

    def subscription_fields(self) -> Iterator[str]:
        for operation in self.operations.values():
            if operation.field is not None:
                yield operation.field

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
        """``_stream``, recorded once at its first result (``inboxd.observe``); a
        subscription's span lasts as long as it does."""
        observer = self.server.observer
        if observer is None:
            await self._stream(operation, query, variables, operation_name, None)
            return
        started = None if operation.field is not None else time.perf_counter()
        with observer.span(self._request_id()) as span:

            def first(errors: list[GraphQLError] | None) -> None:
                observer.done(query, operation_name, errors, started, span)

            await self._stream(operation, query, variables, operation_name, first)

    async def _stream(
        self,
        operation: Operation,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        first_result: Callable[[list[GraphQLError] | None], None] | None,
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
                    if first and first_result is not None:
                        first_result(getattr(result, "errors", None))
                    if first and isinstance(result, PreExecutionError):
                        assert result.errors
                        reason = close_reason(result.errors[0])
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
