"""``GET /oauth/callback``: where Google or Microsoft send the browser back with a code.

No API key is asked for: the single-use ``state`` (from ``startOAuthConnection``) names the
workspace and the authorization, and is checked before anything else. The answer is a small
page saying what happened: it never holds the code or a token, tells the browser not to keep
it, and sends no Referer onwards (the page's URL holds the code).
"""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from inboxd.logs import get_logger
from resolvers import oauth
from resolvers.state import AppState
from storage.db import UNAVAILABLE_ERRORS
from storage.secrets import Secret

log = get_logger("inboxd.oauth")

MAX_PARAMETER = 4096
HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:16px system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}</style>
</head><body><h1>{title}</h1><p>{message}</p></body></html>
"""


def page(title: str, message: str, status: int = 200, code: str | None = None) -> Response:
    headers = dict(HEADERS)
    if code is not None:
        headers["x-inboxd-error"] = code
    return HTMLResponse(
        PAGE.format(title=html.escape(title), message=html.escape(message)),
        status_code=status,
        headers=headers,
    )


def oauth_routes(state: AppState) -> list[Route]:
    async def callback(request: Request) -> Response:
        params = request.query_params
        raw_state = params.get("state", "")
        code = params.get("code")
        error = params.get("error")
        if not raw_state or len(raw_state) > MAX_PARAMETER or len(code or "") > MAX_PARAMETER:
            return page(
                "Not connected",
                "This is not a valid sign-in callback.",
                400,
                "BAD_CALLBACK",
            )
        try:
            done = await oauth.complete_connection(
                state, raw_state, Secret(code) if code else None, error
            )
        except oauth.ConnectionRefused as exc:
            log.info("oauth connection refused", reason=exc.code)
            return page("Not connected", exc.message, 400, exc.code)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("oauth callback failed", error=type(exc).__name__)
            return page(
                "Not connected",
                "The database is unavailable; start the connection again in a moment.",
                503,
                "SERVICE_UNAVAILABLE",
            )
        inbox = done.inbox
        log.info(
            "oauth connection completed",
            inbox_id=str(inbox.id),
            provider=inbox.oauth_provider,
            created=done.created,
        )
        verb = "is connected" if done.created else "is connected again"
        return page(
            "Connected",
            f"{inbox.email} {verb}. inboxd is verifying it now; you can close this window.",
        )

    return [Route("/oauth/callback", callback, methods=["GET"])]
