"""The watch tasks of one receiver (``inboxd.receiver``), one per inbox it holds the lease
of, and how they stop.

A task given up (its lease lost, its inbox past the process's share, or its settings changed)
is cancelled and then waited for by a task of its own, never by the receiver's tick. Until it
has ended, and with it closed its IMAP connection, its lease stays the receiver's and is
renewed with the others (``held``); only then is it released, so the process that takes the
inbox over never logs in beside it. Waited for in the tick, a connection slow to close held
up the renewal of every other lease: they lapsed, and another process took those inboxes
over while their watchers still ran.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("inboxd.receiver")


async def cancel_insisting(tasks: list[asyncio.Task[None]]) -> None:
    """Stop these tasks, insisting: on Python 3.11 ``asyncio.wait_for`` drops a cancellation
    that arrives as its inner future completes (fixed in 3.12), and a watch task that
    swallowed one goes back into IDLE for up to the re-issue interval. Cancelled again every
    second until each has ended (a later cancellation cuts short a polite end of IDLE or a
    LOGOUT the server does not answer; the connection is closed anyway)."""
    pending = set(tasks)
    rounds = 0
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=1.0)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: a watch task ends by cancellation
        rounds += 1
        if pending and rounds == 3:
            log.warning("receiver: a watch task ignored its cancellation", tasks=len(pending))


@dataclass
class WatchTasks:
    """``watch(inbox_id)`` runs as a task per inbox; ``release(inbox_ids)`` gives leases back
    (and may fail: a lease not renewed lapses by itself)."""

    watch: Callable[[uuid.UUID], Coroutine[Any, Any, None]]
    release: Callable[[list[uuid.UUID]], Awaitable[None]]
    running: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    # Given up and not ended yet, by inbox: the task that stops them and then releases them
    # (or, those in ``restarting``, starts them anew).
    stopping: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    restarting: set[uuid.UUID] = field(default_factory=set)
    closing: bool = False

    @property
    def held(self) -> list[uuid.UUID]:
        """Every inbox whose lease is to be renewed: watched, or its watcher still stopping."""
        return [*self.running, *self.stopping]

    @property
    def keeping(self) -> int:
        """How many inboxes stay this receiver's: watched, or being restarted."""
        return len(self.running) + len(self.restarting)

    def start(self, inbox_id: uuid.UUID) -> None:
        self.running[inbox_id] = asyncio.create_task(self.watch(inbox_id), name=f"watch-{inbox_id}")

    def hand_back(self, inbox_ids: list[uuid.UUID], *, restart: bool = False) -> None:
        """Stop these inboxes' watchers without waiting for them; release the leases once
        they have ended or, with ``restart``, watch the inboxes anew then."""
        watchers = {i: t for i in inbox_ids if (t := self.running.pop(i, None)) is not None}
        if not watchers:
            return
        for task in watchers.values():
            task.cancel()
        if restart:
            self.restarting.update(watchers)
        stopper = asyncio.create_task(self._stop(watchers), name=f"hand-back-{len(watchers)}")
        for inbox_id in watchers:
            self.stopping[inbox_id] = stopper

    async def _stop(self, watchers: dict[uuid.UUID, asyncio.Task[None]]) -> None:
        try:
            await cancel_insisting(list(watchers.values()))
        finally:
            for inbox_id in watchers:
                self.stopping.pop(inbox_id, None)
        restart = [i for i in watchers if i in self.restarting and not self.closing]
        self.restarting.difference_update(watchers)
        for inbox_id in restart:
            self.start(inbox_id)  # the lease is kept: watched anew with the new settings
        await self.release([i for i in watchers if i not in restart])

    async def stop_all(self) -> list[uuid.UUID]:
        """Stop every watcher (those being handed back finish first); the inboxes held."""
        self.closing = True
        held = self.held
        running = list(self.running.values())
        self.running.clear()
        await cancel_insisting(running)
        await asyncio.gather(*set(self.stopping.values()), return_exceptions=True)
        return held
