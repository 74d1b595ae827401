"""Browser access from other origins: CORS for HTTP, and the same allow-list for websockets.

inboxd authenticates with bearer keys that a page must hold and send itself, never with
cookies a browser attaches on its own. So a hostile page cannot act as a visitor (the attack
an Origin check on websockets usually stops), and with no allow-list websockets are accepted
from any origin, as before. With an allow-list (``INBOXD_CORS_ORIGINS``), a websocket whose
handshake carries an ``Origin`` outside it is refused with HTTP 403 and a body saying why;
clients that send no ``Origin`` (servers, scripts) are not browsers and are let through.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from inboxd.logs import get_logger
from inboxd.settings import Settings

log = get_logger("inboxd.cors")
ALLOWED_METHODS = ["GET", "POST", "OPTIONS"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Api-Key"]
# Readable by the page: the id to quote in a bug report, and when to retry after a 429.
EXPOSED_HEADERS = ["X-Request-Id", "Retry-After"]


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Starlette's CORSMiddleware for the allow-list; none without one (no CORS headers)."""
    origins = settings.cors_origin_list
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    ]


def websocket_origin_middleware(settings: Settings) -> list[Middleware]:
    """The websocket Origin check; none without an allow-list (nothing to check against, and
    no extra frame kept alive per open websocket)."""
    origins = settings.cors_origin_list
    if not origins or "*" in origins:
        return []
    return [Middleware(WebSocketOriginGuard, origins=frozenset(origins))]


class WebSocketOriginGuard:
    """Refuses a websocket handshake from a browser origin outside the allow-list."""

    def __init__(self, app: ASGIApp, *, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            origin = Headers(scope=scope).get("origin")
            if origin is not None and origin not in self.origins:
                await self._refuse(scope, receive, send, origin)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, origin: str) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        log.info("websocket origin refused", origin=origin[:200])
        reason = (
            f"Origin {origin[:200]} is not allowed to open websockets here; "
            "add it to INBOXD_CORS_ORIGINS."
        ).encode()
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": ""})  # plain 403
            return
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(reason)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": reason})
