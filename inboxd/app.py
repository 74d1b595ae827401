"""ASGI assembly: the GraphQL view, health endpoints, request logging, and the lifespan."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLRequestData
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from inboxd.attachments_http import attachment_routes
from inboxd.console import console_routes
from inboxd.cors import cors_middleware, websocket_origin_middleware
from inboxd.guards import RequestGuard, TokenBuckets, request_principal
from inboxd.logs import get_logger
from inboxd.metrics import HttpMetrics
from inboxd.metrics_http import Exposition
from inboxd.oauth_http import oauth_routes
from inboxd.observe import Observer
from inboxd.request_log import RequestLogMiddleware
from inboxd.settings import Settings
from inboxd.tracing import stop_tracing, tracing_for
from inboxd.ws import GraphQLWebSockets, WebSocketServer
from inboxd.ws_legacy import LegacyConnection, LegacyHandler
from resolvers.auth import ConnectionRefused
from resolvers.state import AppState
from schema import InboxdSchema, Limits, build_schema
from schema.context import Context
from schema.pipeline import response
from storage.db import UNAVAILABLE_ERRORS

log = get_logger("inboxd.http")
# The legacy websocket connection being admitted (on_ws_connect runs in its task).
LEGACY_CONNECTION: ContextVar[LegacyConnection] = ContextVar("inboxd_legacy_connection")
HTTP_OPERATIONS = {
    "GET": {OperationType.QUERY},
    "POST": {OperationType.QUERY, OperationType.MUTATION},
}
STATIC_DIR = Path(__file__).parent / "static"
GRAPHIQL_HTML = (STATIC_DIR / "graphiql.html").read_text(encoding="utf-8")


class InboxdGraphQL(GraphQL[Context, None]):
    graphql_ws_handler_class = LegacyHandler

    def __init__(self, state: AppState, settings: Settings) -> None:
        limits = Limits(
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_tokens=settings.max_tokens,
            max_repeats=settings.max_field_repeats,
            introspection=settings.introspection_enabled,
        )
        schema = build_schema(
            limits,
            compile_queries=settings.compiled_queries,
            plan_shortcut=settings.plan_shortcut,
        )
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql_enabled else None,
            allow_queries_via_get=True,
            subscription_protocols=(
                (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL)
                if settings.legacy_graphql_ws
                else (GRAPHQL_TRANSPORT_WS_PROTOCOL,)
            ),
            connection_init_wait_timeout=timedelta(
                seconds=settings.ws_connection_init_timeout_seconds
            ),
            max_subscriptions_per_connection=settings.ws_max_subscriptions_per_connection,
        )
        self.state = state
        self.settings = settings
        self.schema: InboxdSchema = schema
        # graphql-transport-ws; Strawberry's handler serves only the legacy graphql-ws.
        self.ws = WebSocketServer(schema, state, settings)
        # Metrics and spans per operation; None when both are off (inboxd.observe).
        self.observer = self.ws.observer = Observer.for_settings(schema, settings)

    def encode_json(self, data: object) -> str:
        # A str, not bytes: Strawberry sends bytes as binary websocket frames, which
        # graphql-ws clients (and browsers) do not read as messages.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            parsed = self.decode_json(data)
        except (ValueError, UnicodeDecodeError) as exc:  # orjson's errors are ValueErrors
            raise HTTPException(400, "The request body is not valid JSON (UTF-8).") from exc
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, 'The request body must be a JSON object: {"query": ...}.')
        return parsed

    @property
    def graphql_ide_html(self) -> str:
        # Strawberry's page loads GraphiQL from a CDN and is blank offline; this one loads the
        # copies inboxd ships under /static/graphiql.
        return GRAPHIQL_HTML

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        context = Context(
            state=self.state,
            principal=None,
            request_id=request.scope.get("inboxd.request_id") or uuid.uuid4().hex,
            client_address=request.client.host if request.client else None,
        )
        if isinstance(request, Request):
            try:
                context.principal = await request_principal(request.scope, self.state)
            except UNAVAILABLE_ERRORS as exc:
                # Every field answers SERVICE_UNAVAILABLE instead of the request crashing.
                context.unavailable = True
                log.warning(
                    "database unavailable", request_id=context.request_id, error=type(exc).__name__
                )
        else:
            request.scope["inboxd.context"] = context
        return context

    async def on_ws_connect(self, context: Context) -> None:
        # Only the legacy graphql-ws protocol (Strawberry's handler) comes here.
        connection = LEGACY_CONNECTION.get()
        try:
            context.principal = await self.ws.admit(context.connection_params, connection)
        except ConnectionRefused as exc:
            raise ConnectionRejectionError({"message": exc.reason}) from None
        context.counted = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
            return
        if scope["type"] == "websocket" and self.ws.accepts(scope):
            await self.ws(scope, receive, send)  # graphql-transport-ws: inboxd.ws
            return
        if scope["type"] != "websocket":
            await super().__call__(scope, receive, send)
            return
        connection = LegacyConnection(send)
        LEGACY_CONNECTION.set(connection)
        try:
            await super().__call__(scope, receive, send)
        finally:
            context = scope.get("inboxd.context")
            if context is not None and context.counted and context.principal is not None:
                self.ws.release(context.principal, connection)

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Any,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        # Strawberry's view reads GET requests and whatever the fast envelope (``_direct``)
        # left to it; both run the same ``_execute``.
        return await self._execute(
            context,
            request_adapter.method,
            request_data.query,
            request_data.variables,
            request_data.operation_name,
            request_data.extensions,
        )

    async def _execute(
        self,
        context: Context,
        method: str,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Run one HTTP operation, recorded once (``inboxd.observe``) whichever way
        ``InboxdSchema.execute`` answers it."""
        observer = self.observer
        if observer is None:
            return await self._run(context, method, query, variables, operation_name, extensions)
        started = time.perf_counter()
        with observer.span(context.request_id) as span:
            try:
                result = await self._run(
                    context, method, query, variables, operation_name, extensions
                )
            except HTTPException:
                observer.done(query, operation_name, None, started, span, outcome="error")
                raise
            observer.done(query, operation_name, result.errors, started, span)
            return result

    async def _run(
        self,
        context: Context,
        method: str,
        query: str | None,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        """Run one HTTP operation through the schema's pipeline (``schema.pipeline``)."""
        if isinstance(query, str):
            await self.schema.documents.prepare(query)  # a new document: off the event loop
        # Strawberry would also run subscriptions here, for multipart/SSE streaming, which
        # inboxd does not offer: over plain HTTP a subscription is a clear 400, not a crash.
        try:
            return await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=HTTP_OPERATIONS[method],
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(
                    400,
                    "Subscriptions are served over a websocket at /graphql "
                    "(protocol graphql-transport-ws), not over HTTP.",
                ) from exc
            raise HTTPException(400, exc.as_http_error_reason(method)) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request.") from exc

    async def process_result(self, request: Any, result: ExecutionResult) -> Any:
        return response(result, request.scope.get("inboxd.request_id") or "unknown")

    async def _direct(self, request: Request) -> Response | None:
        """The answer to a POSTed JSON operation, read without Strawberry's view (whose
        request handling costs more than a cached query's execution), or None: the view
        reads the request (GET, forms, malformed bodies) and reports what is wrong with it.
        Either way the operation runs through ``_execute``."""
        if request.method != "POST":
            return None
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict):
            return None
        query, operation_name = body.get("query"), body.get("operationName")
        variables, extensions = body.get("variables"), body.get("extensions")
        if (
            not isinstance(query, str)
            or not isinstance(operation_name, str | None)
            or not isinstance(variables, dict | None)
            or not isinstance(extensions, dict | None)
        ):
            return None
        context = await self.get_context(request, None)
        result = await self._execute(context, "POST", query, variables, operation_name, extensions)
        return Response(
            orjson.dumps(response(result, context.request_id)), media_type="application/json"
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Strawberry answers malformed requests in plain text; clients expect GraphQL's JSON.
        try:
            request = Request(scope=scope, receive=receive)
            response = await self._direct(request) or await self.run(request)
        except ClientDisconnect:
            return  # nobody is left to answer
        except HTTPException as exc:
            response = Response(
                orjson.dumps(
                    {
                        "data": None,
                        "errors": [{"message": exc.reason, "extensions": {"code": "BAD_REQUEST"}}],
                    }
                ),
                status_code=exc.status_code,
                media_type="application/json",
            )
        await response(scope, receive, send)


def create_app(
    settings: Settings,
    state: AppState,
    *,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    exposition = Exposition(settings)  # first: it refuses metrics nobody may read
    graphql = InboxdGraphQL(state, settings)
    http_metrics = HttpMetrics() if settings.metrics_enabled else None
    tracing = tracing_for(settings)
    if tracing is not None:
        tracing.watch(state.db)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            async with state.db.connection() as connection:
                await connection.execute("SELECT 1")
        except Exception as exc:  # any failure means "not ready"; the reason is logged
            log.warning("readiness check failed", error=type(exc).__name__)
            return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
        # Without its LISTEN connection this process cannot deliver subscription events.
        if state.hub is not None and not state.hub.connected:
            return JSONResponse(
                {"status": "unavailable", "database": "up", "events": "reconnecting"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "database": "up"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await exposition.start(state.db, state.hub, graphql.ws)
        if on_startup is not None:
            await on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown()
            await exposition.stop()
            stop_tracing(settings)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *exposition.routes(),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            *attachment_routes(settings, state),
            *oauth_routes(state),
            *console_routes(settings),
            WebSocketRoute("/graphql", graphql),
            *(
                [Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
                if settings.graphiql_enabled
                else []
            ),
        ],
        middleware=[
            *websocket_origin_middleware(settings),
            Middleware(GraphQLWebSockets, server=graphql.ws, path="/graphql"),
            *cors_middleware(settings),
            Middleware(RequestLogMiddleware, http=http_metrics),
            Middleware(
                RequestGuard,
                path="/graphql",
                max_body_bytes=settings.max_body_bytes,
                buckets=TokenBuckets(settings.rate_limit_requests_per_minute),
                state=state,
                metrics=http_metrics,
                documents=graphql.schema.documents,
                send_max_body_bytes=settings.send_request_limit,
            ),
        ],
        lifespan=lifespan,
    )
    app.state.graphql = graphql
    app.state.metrics = exposition
    return app
