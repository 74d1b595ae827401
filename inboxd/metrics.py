"""What inboxd counts, for Prometheus: the metric families and their pre-bound children.

Every label value comes from a finite set fixed here or by the schema (docs/operations.md):
an operation's type and root field (names of the schema's root fields only: anything else is
``other``, several root fields ``multiple``), an outcome, a probe's side and code, a provider
preset, a status class, a pool's name. No value is taken from a request as such: not an
operation name, an email address, a host name or an id.

The hot path pays a dict lookup and two increments per operation: each (type, field) pair has
its counters (one per outcome) and its histogram child bound once, when the schema is known.
Histograms have few buckets (an observation walks them all).

One process, one set of values: ``inboxd serve`` runs one uvicorn process and ``inboxd
worker`` is a process of its own, each scraped on its own endpoint, so prometheus-client's
multiprocess mode (for pre-forked workers sharing one port) is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import GraphQLSchema
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from mail.presets import Provider
from mail.results import ProbeCode
from schema.pipeline import OUTCOMES

REGISTRY = CollectorRegistry(auto_describe=False)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

OPERATION_TYPES = ("query", "mutation", "subscription")
# Any value not in a known set: several root fields in one operation, introspection, an
# invalid document, a code or provider this version does not know.
OTHER = "other"
SIDES = ("smtp", "imap")
PROVIDERS = (*(p.value for p in Provider), OTHER)
CODES = (*(c.value for c in ProbeCode), OTHER)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
POOLS = ("api", "background")
# Few buckets: an observation walks them all.
OPERATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 2.5)
LAG_BUCKETS = (0.1, 1.0, 5.0, 30.0, 120.0)
PROBE_BUCKETS = (0.25, 1.0, 3.0, 10.0, 30.0)
POOL_BUCKETS = (0.001, 0.01, 0.1, 1.0)

OPERATIONS = Counter(
    "inboxd_graphql_operations",
    "GraphQL operations answered, by type, root field and outcome.",
    ("type", "field", "outcome"),
    registry=REGISTRY,
)
OPERATION_SECONDS = Histogram(
    "inboxd_graphql_operation_duration_seconds",
    "Time to answer a GraphQL query or mutation, by type and root field.",
    ("type", "field"),
    buckets=OPERATION_BUCKETS,
    registry=REGISTRY,
)
HTTP_RESPONSES = Counter(
    "inboxd_http_responses",
    "HTTP responses on the API port, by status class.",
    ("status",),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "inboxd_rate_limited_requests",
    "Requests refused with 429: per API key, or per address for callers without a valid key.",
    ("per",),
    registry=REGISTRY,
)
JOB_START_LAG = Histogram(
    "inboxd_verification_start_lag_seconds",
    "From a connection test's due time (queued run_after, or an expired lease) to its claim.",
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "inboxd_verification_attempts",
    "Verification attempts finished, by result (passed, failed, retrying, crashed).",
    ("result",),
    registry=REGISTRY,
)
PROBES = Counter(
    "inboxd_verification_probes",
    "SMTP and IMAP logins tried, by side, result code and provider preset.",
    ("side", "code", "provider"),
    registry=REGISTRY,
)
PROBE_SECONDS = Histogram(
    "inboxd_verification_probe_duration_seconds",
    "Time one SMTP or IMAP login probe took, whatever its result.",
    ("side",),
    buckets=PROBE_BUCKETS,
    registry=REGISTRY,
)
POOL_ACQUIRE_SECONDS = Histogram(
    "inboxd_db_pool_acquire_duration_seconds",
    "Time to get a connection from a database pool (a wait when the pool is exhausted).",
    ("pool",),
    buckets=POOL_BUCKETS,
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class _Bound:
    counts: dict[str, Counter]
    seconds: Histogram


class OperationMetrics:
    """The operation counters of one schema, bound per (type, root field)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        roots = {
            "query": schema.query_type,
            "mutation": schema.mutation_type,
            "subscription": schema.subscription_type,
        }
        self.fields = {
            kind: frozenset(root.fields) if root is not None else frozenset()
            for kind, root in roots.items()
        }
        self._bound: dict[tuple[str, str], _Bound] = {}
        for kind in OPERATION_TYPES:
            for field in (*sorted(self.fields[kind]), OTHER):
                self._bound[kind, field] = _Bound(
                    {o: OPERATIONS.labels(kind, field, o) for o in OUTCOMES},
                    OPERATION_SECONDS.labels(kind, field),
                )
        self._other = self._bound["query", OTHER]

    def record(self, kind: str, field: str | None, outcome: str, seconds: float | None) -> None:
        """Count one operation (``seconds``: its latency, None for a subscription's start);
        a type or field not of the schema counts as ``other``."""
        bound = self._bound.get((kind, field or OTHER)) or self._bound.get(
            (kind, OTHER), self._other
        )
        bound.counts.get(outcome, bound.counts["error"]).inc()
        if seconds is not None:
            bound.seconds.observe(seconds)


class HttpMetrics:
    """Responses by status class, and rate-limit refusals: children bound once."""

    def __init__(self) -> None:
        self._status = [HTTP_RESPONSES.labels(s) for s in STATUS_CLASSES]
        self.limited_key = RATE_LIMITED.labels("key")
        self.limited_address = RATE_LIMITED.labels("address")

    def response(self, status: int) -> None:
        index = status // 100 - 1
        if 0 <= index < len(self._status):
            self._status[index].inc()


def observe_pool_acquire(background: bool, seconds: float) -> None:
    _POOL_CHILDREN[background].observe(seconds)


_POOL_CHILDREN = {
    False: POOL_ACQUIRE_SECONDS.labels("api"),
    True: POOL_ACQUIRE_SECONDS.labels("background"),
}
_ATTEMPT_CHILDREN = {r: ATTEMPTS.labels(r) for r in ("passed", "failed", "retrying", "crashed")}
_PROBE_SECONDS = {side: PROBE_SECONDS.labels(side) for side in SIDES}
_PROVIDERS = frozenset(PROVIDERS)
_CODES = frozenset(CODES)


def job_started(lag_seconds: float) -> None:
    JOB_START_LAG.observe(max(0.0, lag_seconds))


def attempt_finished(result: str) -> None:
    _ATTEMPT_CHILDREN[result].inc()


def probe_finished(side: str, code: str, provider: str | None, seconds: float) -> None:
    """One login probe's result; unknown codes and providers count as ``other``."""
    PROBES.labels(
        side,
        code if code in _CODES else OTHER,
        provider if provider in _PROVIDERS else OTHER,
    ).inc()
    _PROBE_SECONDS[side].observe(seconds)


# Scrape-time families (inboxd.metrics_live) are described there; their gauges are kept here
# so that every family inboxd exposes is named in this module.
LIVE_GAUGES = {
    "inboxd_verification_jobs": "Connection tests by state: queued, running, due, overdue.",
    "inboxd_verification_oldest_due_seconds": "How long the longest-waiting due test has waited.",
    "inboxd_db_pool_connections": "Connections of a database pool, by pool and state.",
    "inboxd_db_pool_max_connections": "The most connections a database pool may open.",
    "inboxd_listener_connected": "1 while the LISTEN connection (events, job wake-ups) is up.",
    "inboxd_ws_connections": "Open graphql-transport-ws connections past connection_init.",
    "inboxd_ws_subscriptions": "Active subscriptions over graphql-transport-ws, by root field.",
}
LIVE_COUNTERS = {
    "inboxd_listener_reconnects": "Times the LISTEN connection was re-established.",
}

__all__ = ["REGISTRY", "HttpMetrics", "OperationMetrics"]
