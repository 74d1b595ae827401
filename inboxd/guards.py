"""HTTP-level guards in front of GraphQL: body size, content type, request rate.

The rate is counted per API key only once the key's secret checked out; requests without a
key, with a malformed, unknown or revoked one, or while the database cannot say, are counted
per client address. So nobody can spend someone else's budget with their visible prefix, and
a made-up key per request buys no fresh budget. The guard authenticates once and leaves the
answer in the ASGI scope, where ``request_principal`` picks it up for the GraphQL context.

One operation may send a larger body: ``sendEmail``, whose attachments travel base64 in its
variables. A body over the common limit is read whole (up to ``send_max_body_bytes``, only for
a caller whose key checked out) and let through only if it is a single ``sendEmail`` mutation:
its ``query`` text, itself within the common limit, is looked up in the schema's one document
cache (``schema.documents``, so the execution that follows finds it parsed) and the operation
the request runs must select ``sendEmail`` and nothing else. Anything else answers 413 as
before, so no other operation, and no caller without a key, gets more than the common limit.
A header or a dedicated path would be cheaper to check, but a client could set it on any
request; the document itself is what runs, so it is what is checked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import orjson
from graphql import FieldNode, OperationType
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inboxd.metrics import HttpMetrics
from resolvers.auth import Authentication, authenticate, check_key, key_from_headers
from resolvers.state import AppState
from schema.documents import Documents
from storage.api_keys import Principal
from storage.db import UNAVAILABLE_ERRORS

# The one operation whose request may exceed the common body limit, and only alone.
LARGE_BODY_FIELD = "sendEmail"
# Where RequestGuard leaves the caller: an Authentication, or the error that kept it from one.
AUTHENTICATION = "inboxd.authentication"


@dataclass
class TokenBuckets:
    """Per-key token buckets, in memory: each process enforces the limit on what it serves.

    ``rate`` tokens per minute, bursts up to ``rate`` (a minute's worth). Idle buckets are
    forgotten so the table cannot grow without bound.
    """

    rate_per_minute: int
    max_keys: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> float:
        """0 if allowed, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        capacity = float(self.rate_per_minute)
        per_second = capacity / 60.0
        tokens, updated = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._forget_full(now)
        return (1.0 - tokens) / per_second

    def _forget_full(self, now: float) -> None:
        full_after = 60.0
        for key, (_, updated) in list(self._buckets.items()):
            if now - updated > full_after:
                del self._buckets[key]


def _error_response(status: int, code: str, message: str, **extensions: object) -> bytes:
    return orjson.dumps(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    )


async def request_principal(scope: Scope, state: AppState) -> Principal | None:
    """The caller of an HTTP request: as RequestGuard found it (the database is not asked
    again), or, for a request that did not pass the guard, authenticated now. Raises the
    guard's database error, so that the request answers SERVICE_UNAVAILABLE."""
    found = scope.get(AUTHENTICATION)
    if isinstance(found, Authentication):
        return found.principal
    if isinstance(found, Exception):
        raise found
    return await authenticate(state, key_from_headers(Headers(scope=scope)))


class RequestGuard:
    """Refuses, before any GraphQL work: bodies over the limit (413; see the module's
    docstring for ``sendEmail``'s own), POSTs that are not ``application/json`` (415), and
    callers over their request rate (429, with ``Retry-After`` and
    ``extensions.retryAfterSeconds``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_body_bytes: int,
        buckets: TokenBuckets,
        state: AppState,
        metrics: HttpMetrics | None = None,
        documents: Documents | None = None,
        send_max_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.buckets = buckets
        self.state = state
        # Without the document cache there is no way to tell a sendEmail: one limit for all.
        self.documents = documents
        self.send_max_body_bytes = (
            max(send_max_body_bytes or 0, max_body_bytes) if documents else max_body_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length: int | None = None
        if scope["method"] == "POST":
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                await self._refuse(
                    send,
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "POST /graphql takes Content-Type: application/json.",
                )
                return
            declared = headers.get("content-length")
            length = int(declared) if declared is not None and declared.isdigit() else None
            if length is not None and length > self.send_max_body_bytes:
                await self._too_large(send, self.send_max_body_bytes)
                return
        principal = await self._authenticate(scope, headers)
        if principal is not None:
            bucket, whose = f"key:{principal.api_key_id}", "this API key"
        else:
            client = scope.get("client")
            bucket, whose = f"ip:{client[0] if client else '-'}", "this address without a valid key"
        wait = self.buckets.take(bucket)
        if wait > 0:
            if self.metrics is not None:
                limited = self.metrics.limited_key if principal else self.metrics.limited_address
                limited.inc()
            retry = max(1, math.ceil(wait))
            await self._refuse(
                send,
                429,
                "RATE_LIMITED",
                f"Too many requests from {whose}; retry in {retry} s.",
                retryAfterSeconds=retry,
                headers=[(b"retry-after", str(retry).encode())],
            )
            return
        if scope["method"] == "POST":
            large = principal is not None and self.send_max_body_bytes > self.max_body_bytes
            if (length is not None and length <= self.max_body_bytes) or not large:
                if length is not None and length > self.max_body_bytes:
                    await self._too_large(send, self.max_body_bytes)
                    return
                receive = self._bounded(receive, self.max_body_bytes)
            else:
                try:
                    body = await _read_body(receive, self.send_max_body_bytes)
                except BodyTooLarge as exc:
                    await self._too_large(send, exc.limit)
                    return
                if body is None:
                    return  # the client left
                if len(body) > self.max_body_bytes and not await self._single_send(body):
                    await self._too_large(send, self.max_body_bytes)
                    return
                receive = _replay(body, receive)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._too_large(send, exc.limit)

    async def _single_send(self, body: bytes) -> bool:
        """Whether ``body`` is a request running one mutation that selects ``sendEmail`` alone
        (its query text within the common limit)."""
        assert self.documents is not None
        try:
            data = orjson.loads(body)
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        query, name = data.get("query"), data.get("operationName")
        if not isinstance(query, str) or len(query) > self.max_body_bytes:
            return False
        if not isinstance(name, str | None):
            return False
        document = await self.documents.prepare(query)
        if document.node is None:
            return False
        operation, _ = self.documents.operation(document, name)
        if operation is None or operation.operation is not OperationType.MUTATION:
            return False
        selections = operation.selection_set.selections
        return (
            len(selections) == 1
            and isinstance(selections[0], FieldNode)
            and selections[0].name.value == LARGE_BODY_FIELD
        )

    async def _too_large(self, send: Send, limit: int) -> None:
        if limit == self.max_body_bytes and self.send_max_body_bytes > limit:
            message = (
                f"The request body is over {limit} bytes. Only a sendEmail mutation, alone in "
                f"its request and with a valid API key, may send up to "
                f"{self.send_max_body_bytes} bytes."
            )
        elif limit == self.max_body_bytes:
            message = f"The request body is over {limit} bytes."
        else:
            message = (
                f"The request body is over {limit} bytes, the most a sendEmail request may "
                "send (INBOXD_SEND_MAX_REQUEST_BYTES)."
            )
        await self._refuse(send, 413, "PAYLOAD_TOO_LARGE", message, limitBytes=limit)

    async def _authenticate(self, scope: Scope, headers: Headers) -> Principal | None:
        try:
            authentication = await check_key(self.state, key_from_headers(headers))
        except UNAVAILABLE_ERRORS as exc:
            scope[AUTHENTICATION] = exc
            return None
        scope[AUTHENTICATION] = authentication
        return authentication.principal

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        """A receive that stops a chunked body at the limit (Content-Length can be absent)."""
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return bounded_receive

    async def _refuse(
        self,
        send: Send,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        **extensions: object,
    ) -> None:
        body = _error_response(status, code, message, **extensions)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None if the client left; BodyTooLarge past ``limit``."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then the client's own messages."""
    given = False

    async def replay_receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_receive
