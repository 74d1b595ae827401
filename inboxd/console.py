"""The web console at /console: static pages and modules under inboxd/static/console, no
CDN and no build step (graphql-ws's client is vendored there, built by console/).

Every response carries a Content-Security-Policy that allows only this origin: the console
loads nothing from elsewhere and runs no inline script, so an injected string stays text."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from inboxd.settings import Settings

CONSOLE_DIR = Path(__file__).parent / "static" / "console"
# 'self' covers the page's own ws:/wss: origin for connect-src (CSP Level 3).
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The API key lives in the tab's sessionStorage; a shared cache must not keep pages.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


def console_routes(settings: Settings) -> list[BaseRoute]:
    """The console's routes, or none when it is off (INBOXD_CONSOLE; off in production
    unless set)."""
    if not settings.console_enabled:
        return []

    async def to_index(_: object) -> Response:
        return RedirectResponse("/console/", status_code=308)

    return [
        Route("/console", to_index),
        Mount("/console", ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console"),
    ]
