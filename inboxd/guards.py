"""HTTP-level guards in front of GraphQL: body size, content type, request rate.

The rate is counted per API key only once the key's secret checked out; requests without a
key, with a malformed, unknown or revoked one, or while the database cannot say, are counted
per client address. So nobody can spend someone else's budget with their visible prefix, and
a made-up key per request buys no fresh budget. The guard authenticates once and leaves the
answer in the ASGI scope, where ``request_principal`` picks it up for the GraphQL context.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inboxd.metrics import HttpMetrics
from resolvers.auth import Authentication, authenticate, check_key, key_from_headers
from resolvers.state import AppState
from storage.api_keys import Principal
from storage.db import UNAVAILABLE_ERRORS

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
    """Refuses, before any GraphQL work: bodies over the limit (413), POSTs that are not
    ``application/json`` (415), and callers over their request rate (429, with
    ``Retry-After`` and ``extensions.retryAfterSeconds``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        max_body_bytes: int,
        buckets: TokenBuckets,
        state: AppState,
        metrics: HttpMetrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.buckets = buckets
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
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
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._refuse(
                    send,
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"The request body is over {self.max_body_bytes} bytes.",
                )
                return
            receive = self._bounded(receive, send)
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
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(
                send,
                413,
                "PAYLOAD_TOO_LARGE",
                f"The request body is over {self.max_body_bytes} bytes.",
            )

    async def _authenticate(self, scope: Scope, headers: Headers) -> Principal | None:
        try:
            authentication = await check_key(self.state, key_from_headers(headers))
        except UNAVAILABLE_ERRORS as exc:
            scope[AUTHENTICATION] = exc
            return None
        scope[AUTHENTICATION] = authentication
        return authentication.principal

    def _bounded(self, receive: Receive, send: Send) -> Receive:
        """A receive that stops a chunked body at the limit (Content-Length can be absent)."""
        seen = 0
        limit = self.max_body_bytes

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
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
    pass
