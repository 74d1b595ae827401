"""Where inboxd records what it did: each GraphQL operation once, each verification attempt once.

An HTTP operation is recorded by ``InboxdGraphQL._execute`` (``inboxd.app``), around
``InboxdSchema.execute``: one call that covers both ways it is answered, the compiled plan's
shortcut and Strawberry's execute with the ``Pipeline`` extension, so neither is counted twice
or missed. A websocket operation is recorded by its connection (``inboxd.ws_connection``),
around ``schema.stream``, and a subscription a shared feed serves when it joins.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError

from inboxd import metrics
from inboxd.settings import Settings
from inboxd.tracing import Tracing, named, tracing_for
from resolvers.logins import Logins
from resolvers.verification import VerificationConfig, run_attempt
from schema.pipeline import outcome_of, root_field
from storage.job_runs import ClaimedTest, TestOutcome

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from schema import InboxdSchema


FIELD_CACHE_SIZE = 1024


class Observer:
    """Operation metrics (when on) and spans (when traces are on) for one schema."""

    def __init__(self, schema: InboxdSchema, settings: Settings) -> None:
        self.documents = schema.documents
        self.metrics = (
            metrics.OperationMetrics(schema.graphql_schema()) if settings.metrics_enabled else None
        )
        self.tracing = tracing_for(settings)
        self._fields: dict[tuple[object, object], tuple[str, str | None]] = {}

    @classmethod
    def for_settings(cls, schema: InboxdSchema, settings: Settings) -> Observer | None:
        """None when neither metrics nor traces are on: the operation path then pays nothing."""
        if not settings.metrics_enabled and not settings.traces_endpoint:
            return None
        return cls(schema, settings)

    def _root_field(self, query: object, operation_name: object) -> tuple[str, str | None]:
        # Per request, a document is looked up and its operation found again: remember the
        # answer for the texts seen (bounded like the document cache, which it mirrors).
        if not isinstance(query, str) or not isinstance(operation_name, str | None):
            return root_field(self.documents, query, operation_name)
        key = (query, operation_name)
        found = self._fields.get(key)
        if found is None:
            found = root_field(self.documents, query, operation_name)
            # Only a valid document's own field: "other" may yet turn out to be one.
            if found[1] is not None and len(self._fields) < FIELD_CACHE_SIZE:
                self._fields[key] = found
        return found

    def span(self, request_id: str) -> AbstractContextManager[Span | None]:
        return self.tracing.operation(request_id) if self.tracing is not None else nullcontext()

    def done(
        self,
        query: object,
        operation_name: object,
        errors: Iterable[GraphQLError] | None,
        started: float | None,
        span: Span | None,
        *,
        outcome: str | None = None,
    ) -> str:
        """Record one operation (``started``: its perf_counter start, None for a subscription
        starting); returns its type."""
        kind, field = self._root_field(query, operation_name)
        outcome = outcome or outcome_of(errors)
        if self.metrics is not None:
            seconds = None if started is None else time.perf_counter() - started
            self.metrics.record(kind, field, outcome, seconds)
        if span is not None:
            named(span, kind, field or metrics.OTHER, outcome)
        return kind

    def subscription_field(self, query: str, operation_name: str | None) -> str | None:
        """The root field of a subscription (for the active-subscriptions gauge), else None."""
        kind, field = root_field(self.documents, query, operation_name)
        return (field or metrics.OTHER) if kind == "subscription" else None


def record_claim(test: ClaimedTest) -> None:
    metrics.job_started(test.lag)


async def observed_attempt(
    test: ClaimedTest, logins: Logins, config: VerificationConfig, tracing: Tracing | None
) -> TestOutcome:
    """``run_attempt`` with its probes counted and, with traces on, its spans."""
    started_ns = time.time_ns()
    scope: AbstractContextManager[Any] = (
        tracing.verification(test.attempts) if tracing is not None else nullcontext()
    )
    with scope:
        outcome = await run_attempt(test, logins, config)
        provider = str(test.inbox.provider)
        for side, result in (("smtp", outcome.smtp), ("imap", outcome.imap)):
            if result is None:
                continue
            code, latency_ms = str(result.get("code")), int(result.get("latency_ms") or 0)
            metrics.probe_finished(side, code, provider, latency_ms / 1000)
            if tracing is not None:
                tracing.probe(side, code, provider, started_ns, latency_ms)
    if outcome.passed:
        metrics.attempt_finished("passed")
    else:
        metrics.attempt_finished("retrying" if outcome.retry_at is not None else "failed")
    return outcome


def record_crash() -> None:
    metrics.attempt_finished("crashed")
