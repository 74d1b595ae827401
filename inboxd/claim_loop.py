"""What the verification worker and the outbox worker share: claim due work under a lease,
sleep until the earliest work comes due (woken early by NOTIFY, or by a slot freed), keep
each claim's lease alive while it runs, and stop with a grace.

A subclass says how to claim (``_claim``: start a task per claimed item in ``running`` and
return how long to sleep) and how to renew a lease (``_extend_lease``); ``stop`` gives it
the items still running when the grace ran out (``_give_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import ClassVar

import structlog

from resolvers.state import AppState
from storage.db import UNAVAILABLE_ERRORS, Connection
from storage.listener import EventHub

log = structlog.get_logger("inboxd.worker")

# Wake this much after the due time, so the claim's now() has passed it.
DUE_SLACK = 0.005
# Due, but not claimable: another worker holds it, or is committing its claim.
MIN_SLEEP = 0.05


def new_worker_id() -> str:
    """Who holds a lease: host, process and a random part (two loops of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class ClaimLoop:
    state: AppState
    hub: EventHub
    _: KW_ONLY
    concurrency: int = 8
    lease: timedelta = timedelta(seconds=60)
    poll_interval: float = 15.0
    worker_id: str = field(default_factory=new_worker_id)
    running: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _waker: asyncio.Event | None = None

    kind: ClassVar[str] = "worker"  # names its task and its log lines

    async def start(self) -> None:
        self._waker = self.hub.job_waker()
        self._task = asyncio.create_task(self._loop(), name=f"{self.kind}-{self.worker_id}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let running work finish within ``grace``, give back the rest."""
        await self._stop_claiming()
        await self._give_back(await self._finish_running(grace))

    async def _stop_claiming(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _finish_running(self, grace: float) -> list[uuid.UUID]:
        """Wait up to ``grace`` for the running tasks, cancel the rest; their ids."""
        if not self.running:
            return []
        _, pending = await asyncio.wait(list(self.running.values()), timeout=grace)
        unfinished = [item for item, task in self.running.items() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return unfinished

    async def _give_back(self, unfinished: list[uuid.UUID]) -> None:
        """Release what was cancelled at the stop (or leave its lease to run out)."""

    async def _loop(self) -> None:
        assert self._waker is not None
        backoff = 0.5
        while not self._stopping:
            self._waker.clear()
            try:
                sleep = await self._claim()
                backoff = 0.5
            except UNAVAILABLE_ERRORS as exc:
                log.warning(
                    f"{self.kind} claim failed; database unavailable?", error=type(exc).__name__
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if sleep <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waker.wait(), sleep)

    async def _claim(self) -> float:
        """Claim what is due; how long to sleep before looking again (0: at once)."""
        raise NotImplementedError

    def _sleep(self, *, full: bool, due_in: float | None) -> float:
        """After a claim: at once when every free slot was filled (more may be due), else
        until the next due time, within the poll interval."""
        if full:
            return 0
        if due_in is None:
            return self.poll_interval
        if due_in <= 0:
            return MIN_SLEEP
        return min(due_in + DUE_SLACK, self.poll_interval)

    def _slot_freed(self) -> None:
        if self._waker is not None and not self._stopping:
            self._waker.set()

    async def _extend_lease(self, connection: Connection, item: uuid.UUID) -> bool:
        """Renew ``item``'s lease; False once it is no longer this worker's."""
        raise NotImplementedError

    async def _heartbeat(self, item: uuid.UUID) -> None:
        """Renews ``item``'s lease every third of it while it runs (cancelled when it ends)."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.state.db.connection(background=True) as connection:
                    held = await self._extend_lease(connection, item)
            except UNAVAILABLE_ERRORS:
                continue
            if not held:
                return
