"""Where Prometheus reads this process's metrics: ``GET /metrics`` on the API port behind a
bearer token (``INBOXD_METRICS_TOKEN``), or on a port of its own (``INBOXD_METRICS_PORT``,
prometheus-client's server on a thread), the only way to scrape an ``inboxd worker``.
"""

from __future__ import annotations

import asyncio
import hmac
from wsgiref.simple_server import WSGIServer

from prometheus_client import generate_latest, start_http_server
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inboxd import metrics
from inboxd.metrics_live import LIVE, Sources
from inboxd.runtime import ConfigurationError
from inboxd.settings import Settings
from inboxd.ws import WebSocketServer
from storage import observe
from storage.db import Database
from storage.listener import EventHub

# The text format every Prometheus version reads (what generate_latest writes).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def check_settings(settings: Settings) -> None:
    if (
        settings.metrics_enabled
        and settings.metrics_token is None
        and settings.metrics_port is None
    ):
        raise ConfigurationError(
            "INBOXD_METRICS_ENABLED needs INBOXD_METRICS_TOKEN (scrapes of /metrics on the API "
            "port send it as a bearer token) or INBOXD_METRICS_PORT (a port of their own)."
        )


class Exposition:
    """This process's metrics endpoint and scrape-time sources, while it runs."""

    def __init__(self, settings: Settings) -> None:
        check_settings(settings)
        self.settings = settings
        self.enabled = settings.metrics_enabled
        self._sources: Sources | None = None
        self._previous: Sources | None = None  # another inboxd in this process (tests)
        self._server: WSGIServer | None = None
        token = settings.metrics_token
        self._token = f"Bearer {token.get_secret_value()}".encode() if token else None

    def routes(self) -> list[Route]:
        """``/metrics`` for the API's app, unless metrics are off or have their own port."""
        if not self.enabled or self.settings.metrics_port is not None:
            return []
        return [Route("/metrics", self._endpoint, methods=["GET"])]

    async def _endpoint(self, request: Request) -> Response:
        sent = request.headers.get("authorization", "").encode()
        if self._token is None or not hmac.compare_digest(sent, self._token):
            return Response(
                "Send Authorization: Bearer <INBOXD_METRICS_TOKEN>.\n",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        # Formatted on a thread: the live values are read on the loop meanwhile.
        body = await run_in_threadpool(generate_latest, metrics.REGISTRY)
        return Response(body, media_type=TEXT_FORMAT)

    async def start(
        self, db: Database, hub: EventHub | None, websockets: WebSocketServer | None = None
    ) -> None:
        if not self.enabled:
            return
        fields: frozenset[str] = frozenset()
        if websockets is not None:
            root = websockets.schema.graphql_schema().subscription_type
            fields = frozenset(root.fields) if root is not None else frozenset()
        self._sources = Sources(
            asyncio.get_running_loop(),
            db,
            hub,
            websockets.counts if websockets is not None else None,
            fields,
        )
        self._previous, LIVE.sources = LIVE.sources, self._sources
        observe.pool_acquired = metrics.observe_pool_acquire
        if self.settings.metrics_port is not None:
            self._server, _ = start_http_server(
                self.settings.metrics_port, self.settings.metrics_host, metrics.REGISTRY
            )

    @property
    def port(self) -> int | None:
        """The port of the metrics' own server (useful when 0 was asked for)."""
        return self._server.server_port if self._server is not None else None

    async def stop(self) -> None:
        if LIVE.sources is self._sources and self._sources is not None:
            LIVE.sources = self._previous
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
