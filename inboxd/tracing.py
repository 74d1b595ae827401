"""OpenTelemetry traces, exported over OTLP/HTTP when ``INBOXD_TRACES_ENDPOINT`` is set.

The SDK and the exporter are the optional extra ``otel`` (``pip install inboxd[otel]``) and
are imported only when traces are configured: without them inboxd pays nothing.

Spans: one per GraphQL operation (``inboxd.observe``), a child per SQL round trip (asyncpg's
query logger, which asyncpg calls in the context of the query's task, so the operation's span
is the parent), and for a verification one span with a child per SMTP and IMAP probe. No
attribute carries a secret, an address or a host: statements are SQL text with ``$n``
parameters (their values are never recorded), probes say their side, code and provider.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from inboxd.runtime import ConfigurationError
from inboxd.settings import Settings
from storage.db import Database

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

STATEMENT_CHARS = 300  # a statement is recorded up to this length


class Tracing:
    def __init__(self, settings: Settings) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:
            raise ConfigurationError(
                "INBOXD_TRACES_ENDPOINT is set but OpenTelemetry is not installed: "
                "pip install 'inboxd[otel]'"
            ) from exc
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": settings.traces_service_name})
        )
        exporter = OTLPSpanExporter(
            endpoint=settings.traces_endpoint, timeout=settings.traces_export_timeout_seconds
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=settings.traces_export_interval_seconds * 1000,
                export_timeout_millis=settings.traces_export_timeout_seconds * 1000,
            )
        )
        self.tracer: Tracer = self.provider.get_tracer("inboxd")

    def watch(self, db: Database) -> None:
        """A span per SQL round trip on ``db``'s pools (opened after this call)."""
        if self._sql_span not in db.query_loggers:
            db.query_loggers.append(self._sql_span)

    def _sql_span(self, record: Any) -> None:
        end = time.time_ns()
        statement = " ".join(str(record.query).split())[:STATEMENT_CHARS]
        span = self.tracer.start_span(
            "db.query",
            start_time=end - int(record.elapsed * 1e9),
            attributes={
                "db.system": "postgresql",
                "db.operation": statement.split(" ", 1)[0].upper(),
                "db.statement": statement,
            },
        )
        if record.exception is not None:
            span.set_attribute("error.type", type(record.exception).__name__)
        span.end(end_time=end)

    @contextmanager
    def operation(self, request_id: str) -> Iterator[Span]:
        """The span of one GraphQL operation; ``named`` gives it its name once known."""
        with self.tracer.start_as_current_span(
            "graphql", attributes={"inboxd.request_id": request_id}
        ) as span:
            yield span

    @contextmanager
    def verification(self, attempt: int) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            "verification", attributes={"inboxd.attempt": attempt}
        ) as span:
            yield span

    def probe(self, side: str, code: str, provider: str, started_ns: int, latency_ms: int) -> None:
        """A finished probe's span, as a child of the current (verification) span. The probes
        run concurrently from ``started_ns`` (resolvers.verification.run_attempt)."""
        span = self.tracer.start_span(
            f"{side} login",
            start_time=started_ns,
            attributes={"inboxd.side": side, "inboxd.code": code, "inboxd.provider": provider},
        )
        span.end(end_time=started_ns + latency_ms * 1_000_000)

    def shutdown(self) -> None:
        """Export what is left, then stop."""
        self.provider.shutdown()


def named(span: Span, kind: str, field: str, outcome: str) -> None:
    span.update_name(f"{kind} {field}")
    span.set_attribute("graphql.operation.type", kind)
    span.set_attribute("inboxd.root_field", field)
    span.set_attribute("inboxd.outcome", outcome)


_ACTIVE: dict[str, Tracing] = {}


def tracing_for(settings: Settings) -> Tracing | None:
    """The process's tracing for ``settings`` (one provider per endpoint, shared by the API and
    the worker), or None when traces are off."""
    endpoint = settings.traces_endpoint
    if not endpoint:
        return None
    tracing = _ACTIVE.get(endpoint)
    if tracing is None:
        tracing = _ACTIVE[endpoint] = Tracing(settings)
    return tracing


def stop_tracing(settings: Settings) -> None:
    tracing = _ACTIVE.pop(settings.traces_endpoint or "", None)
    if tracing is not None:
        tracing.shutdown()
