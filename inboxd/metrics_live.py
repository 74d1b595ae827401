"""Gauges read when Prometheus scrapes: the verification queue, the database pools, the event
listener and the websocket server.

They are read on the event loop that owns them (asyncpg pools, dicts that the loop changes)
while the exposition runs on a thread (prometheus-client's server on a port of its own, or
the API's /metrics handler in Starlette's thread pool): a scrape never holds the loop while it
formats text, and never reads a dict the loop is changing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inboxd.logs import get_logger
from inboxd.metrics import LIVE_COUNTERS, LIVE_GAUGES, POOLS, REGISTRY
from storage.db import UNAVAILABLE_ERRORS, Database
from storage.job_stats import JobStats, job_stats
from storage.listener import EventHub

log = get_logger("inboxd.metrics")

# A test due this long and not started is overdue: workers start one within a second of its
# due time (README), so five seconds means none is taking work.
OVERDUE_AFTER_SECONDS = 5.0
# How long a scrape waits for the loop's answer (the job counts are one query).
READ_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    jobs: JobStats | None
    pools: dict[str, tuple[int, int, int]]  # name: (size, idle, max)
    listener: tuple[bool, int] | None  # (connected, reconnects)
    ws_connections: int | None
    subscriptions: dict[str, int]


@dataclass(eq=False)
class Sources:
    """What one running inboxd (API, worker, or both) lets a scrape read."""

    loop: asyncio.AbstractEventLoop
    db: Database
    hub: EventHub | None
    # The websocket server's counts: (open connections, subscriptions by root field).
    websockets: Callable[[], tuple[int, dict[str, int]]] | None = None
    subscription_fields: frozenset[str] = field(default_factory=frozenset)
    # The loop's thread (Sources are made on it): a scrape there must not wait for the loop.
    thread: int = field(default_factory=threading.get_ident)

    async def read(self) -> Snapshot:
        jobs = None
        try:
            async with self.db.connection() as connection:
                jobs = await job_stats(connection, overdue_after=OVERDUE_AFTER_SECONDS)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("metrics: job counts unavailable", error=type(exc).__name__)
        pools = {}
        for name, pool in self.db.open_pools().items():
            pools[name] = (pool.get_size(), pool.get_idle_size(), pool.get_max_size())
        listener = (self.hub.connected, self.hub.reconnects) if self.hub is not None else None
        ws_connections, subscriptions = None, dict[str, int]()
        if self.websockets is not None:
            ws_connections, by_field = self.websockets()
            for name, count in by_field.items():
                label = name if name in self.subscription_fields else "other"
                subscriptions[label] = subscriptions.get(label, 0) + count
        return Snapshot(jobs, pools, listener, ws_connections, subscriptions)


class LiveCollector(Collector):
    """The scrape-time families of whichever inboxd is running in this process."""

    def __init__(self) -> None:
        self.sources: Sources | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # the families depend on what runs; not checked for clashes at register

    def collect(self) -> Iterable[Metric]:
        sources = self.sources
        if sources is None or sources.thread == threading.get_ident():
            return []
        future = asyncio.run_coroutine_threadsafe(sources.read(), sources.loop)
        try:
            snapshot = future.result(READ_TIMEOUT_SECONDS)
        except Exception as exc:  # a scrape reports what it can; the loop may be stopping
            future.cancel()
            log.warning("metrics: live values unavailable", error=type(exc).__name__)
            return []
        return list(families(snapshot))


def _gauge(name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, LIVE_GAUGES[name], labels=list(labels))


def families(snapshot: Snapshot) -> Iterator[Metric]:
    if snapshot.jobs is not None:
        jobs = _gauge("inboxd_verification_jobs", ["state"])
        for state in ("queued", "running", "due", "overdue"):
            jobs.add_metric([state], getattr(snapshot.jobs, state))
        yield jobs
        lag = _gauge("inboxd_verification_oldest_due_seconds")
        lag.add_metric([], snapshot.jobs.oldest_due_seconds)
        yield lag
    connections = _gauge("inboxd_db_pool_connections", ["pool", "state"])
    most = _gauge("inboxd_db_pool_max_connections", ["pool"])
    for name in POOLS:
        size, idle, maximum = snapshot.pools.get(name, (0, 0, 0))
        if name in snapshot.pools:
            connections.add_metric([name, "busy"], size - idle)
            connections.add_metric([name, "idle"], idle)
            most.add_metric([name], maximum)
    yield connections
    yield most
    if snapshot.listener is not None:
        up, reconnects = snapshot.listener
        connected = _gauge("inboxd_listener_connected")
        connected.add_metric([], 1.0 if up else 0.0)
        yield connected
        name = "inboxd_listener_reconnects"
        counter = CounterMetricFamily(name, LIVE_COUNTERS[name])
        counter.add_metric([], reconnects)
        yield counter
    if snapshot.ws_connections is not None:
        ws = _gauge("inboxd_ws_connections")
        ws.add_metric([], snapshot.ws_connections)
        yield ws
        subscriptions = _gauge("inboxd_ws_subscriptions", ["field"])
        for name, count in sorted(snapshot.subscriptions.items()):
            subscriptions.add_metric([name], count)
        yield subscriptions


LIVE = LiveCollector()
REGISTRY.register(LIVE)
