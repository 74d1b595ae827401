"""One LISTEN connection per process, fanned out in memory.

Subscriptions and workers register interest here; the hub holds a single dedicated asyncpg
connection that LISTENs on the event and job channels. When that connection drops (a database
restart, a network cut), the hub reconnects with backoff and tells every watcher to re-read its
state, so a change made while it was away is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from storage.db import Connection, asyncpg_url
from storage.events import CHANNEL as EVENTS_CHANNEL
from storage.events import Event
from storage.jobs import JOBS_CHANNEL

log = structlog.get_logger("inboxd.listener")

# Put in a watcher's queue when the listener reconnected: "re-read, you may have missed events".
RESYNC = object()
QUEUE_LIMIT = 256


@dataclass(eq=False)
class Watcher:
    workspace_id: uuid.UUID | None
    accepts: Callable[[Event], bool]
    queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def offer(self, item: object) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            # A slow consumer: drop the backlog and ask it to re-read state instead.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


class CallbackWatcher:
    """Interest in some events, handed to ``deliver`` synchronously from the listener's
    callback: one such watcher serves a whole group of subscribers, so it must not block."""

    __slots__ = ("accepts", "deliver", "workspace_id")

    def __init__(
        self,
        workspace_id: uuid.UUID | None,
        accepts: Callable[[Event], bool],
        deliver: Callable[[object], None],
    ) -> None:
        self.workspace_id = workspace_id
        self.accepts = accepts
        self.deliver = deliver

    def offer(self, item: object) -> None:
        self.deliver(item)


class EventHub:
    def __init__(
        self,
        database_url: str,
        *,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
        health_interval: float = 5.0,
    ) -> None:
        self._url = asyncpg_url(database_url)
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._health_interval = health_interval
        self._watchers: set[Watcher | CallbackWatcher] = set()
        self._job_wakers: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inboxd-listener")

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def job_waker(self) -> asyncio.Event:
        """An event set whenever a job is queued anywhere (and after a reconnect)."""
        waker = asyncio.Event()
        self._job_wakers.add(waker)
        return waker

    def wake_workers(self) -> None:
        for waker in self._job_wakers:
            waker.set()

    @contextlib.asynccontextmanager
    async def watch(
        self, workspace_id: uuid.UUID | None, accepts: Callable[[Event], bool]
    ) -> AsyncIterator[Watcher]:
        watcher = Watcher(workspace_id, accepts)
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    def wanted(self, event: Event) -> bool:
        """Whether a watcher in this process would take ``event``, asked before it happens."""
        return any(
            w.workspace_id in (None, event.workspace_id) and w.accepts(event)
            for w in self._watchers
        )

    def add(
        self,
        workspace_id: uuid.UUID | None,
        accepts: Callable[[Event], bool],
        deliver: Callable[[object], None],
    ) -> CallbackWatcher:
        """Hand each accepted event, and RESYNC after a reconnect, to ``deliver`` until
        ``remove``."""
        watcher = CallbackWatcher(workspace_id, accepts, deliver)
        self._watchers.add(watcher)
        return watcher

    def remove(self, watcher: CallbackWatcher) -> None:
        self._watchers.discard(watcher)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            self.wake_workers()
            return
        try:
            event = Event.decode(payload)
        except (ValueError, KeyError):
            log.warning("ignored malformed event payload")
            return
        for watcher in list(self._watchers):
            if watcher.workspace_id not in (None, event.workspace_id):
                continue
            if watcher.accepts(event):
                watcher.offer(event)

    def _resync_all(self) -> None:
        for watcher in list(self._watchers):
            watcher.offer(RESYNC)
        self.wake_workers()

    async def _run(self) -> None:
        attempt = 0
        first = True
        while True:
            connection: Connection | None = None
            try:
                connection = await asyncpg.connect(self._url, timeout=self._connect_timeout)
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _c, lost=lost: lost.set())

                def on_notify(_c: Connection, _pid: int, channel: str, payload: object) -> None:
                    self._dispatch(channel, str(payload))  # a str: NOTIFY payloads are text

                await connection.add_listener(EVENTS_CHANNEL, on_notify)
                await connection.add_listener(JOBS_CHANNEL, on_notify)
                self._connected.set()
                if not first:
                    self.reconnects += 1
                    log.info("listener reconnected", reconnects=self.reconnects)
                    self._resync_all()
                first = False
                attempt = 0
                while not lost.is_set():
                    # A dead TCP peer may not be noticed until we talk to it.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._health_interval)
                    if not lost.is_set():
                        await connection.execute("SELECT 1", timeout=self._connect_timeout)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("listener connection lost", error=type(exc).__name__)
            finally:
                self._connected.clear()
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            attempt += 1
            delay = min(self._max_backoff, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
            await asyncio.sleep(delay)
