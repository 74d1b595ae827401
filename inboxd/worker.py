"""Background work beside the API: the LISTEN hub, the verification workers and the
receiver that watches mailboxes (``inboxd.receiver``).

A worker claims due connection tests from Postgres (``FOR UPDATE SKIP LOCKED``), holds each
under a lease that it renews while the probes run, and records the outcome only if it still
holds the lease. Between claims it sleeps until the earliest test comes due (a delayed, spaced
or retried test, or an expired lease), woken early by NOTIFY when a test is queued or
rescheduled; ``poll_interval`` caps that sleep as a safety net.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

import structlog

from inboxd.claim_loop import ClaimLoop
from inboxd.configs import build_state, outbox_config, receiver_config, verification_config
from inboxd.metrics_http import Exposition
from inboxd.observe import observed_attempt, record_claim, record_crash
from inboxd.outbox_worker import OutboxWorker
from inboxd.receiver import Receiver
from inboxd.runtime import Resolved, log_pending_tasks, stop_on_signals
from inboxd.settings import Settings
from inboxd.tracing import Tracing, stop_tracing, tracing_for
from resolvers.logins import EXTERNAL_EXPIRED_REASON, Logins
from resolvers.state import AppState
from resolvers.verification import (
    VerificationConfig,
    crashed_outcome,
    store_outcome,
    take_login_slot,
)
from storage import inbox_tokens, job_runs
from storage.db import UNAVAILABLE_ERRORS, Connection

log = structlog.get_logger("inboxd.worker")


@dataclass
class Worker(ClaimLoop):
    config: VerificationConfig
    # Tests whose logins are in progress: what ``concurrency`` limits. A test leaves this set
    # once its probes are done, so the next one is claimed while its outcome is stored.
    probing: set[uuid.UUID] = field(default_factory=set)
    tracing: Tracing | None = None
    # The last look found more due work than free slots: a slot that frees up looks again.
    # Otherwise nothing else was due, and only NOTIFY or the next due time can change that.
    _saturated: bool = False

    kind: ClassVar[str] = "worker"

    async def _give_back(self, unfinished: list[uuid.UUID]) -> None:
        for test_id in unfinished:
            try:
                async with self.state.db.connection(background=True) as connection:
                    released = await job_runs.release(connection, test_id, self.worker_id)
            except UNAVAILABLE_ERRORS:
                released = False  # its lease expires and another worker takes it
            log.info("released unfinished test", test_id=str(test_id), released=released)

    async def _extend_lease(self, connection: Connection, item: uuid.UUID) -> bool:
        return await job_runs.extend_lease(connection, item, self.worker_id, self.lease)

    async def _claim(self) -> float:
        """Claim what is due; return how long to sleep before looking again (0: at once)."""
        free = self.concurrency - len(self.probing)
        self._saturated = free <= 0
        if self._saturated:
            return self.poll_interval  # a slot that frees up wakes the loop
        async with self.state.db.connection(background=True) as connection:
            tests = await job_runs.claim_tests(
                connection,
                worker_id=self.worker_id,
                lease=self.lease,
                limit=free,
                max_attempts=self.config.max_attempts,
            )
            # Started before asking when the next test is due: their logins need not wait
            # for that round trip.
            for test in tests:
                record_claim(test)
                task = asyncio.create_task(self._run(test), name=f"test-{test.id}")
                self.running[test.id] = task
                self.probing.add(test.id)
            due_in = None
            if len(tests) < free:  # nothing more is due now: when is the next one?
                due_in = await job_runs.fail_exhausted_then_next_due(
                    connection, max_attempts=self.config.max_attempts
                )
                # An external OAuth token that ran out says so now, not at the next login.
                expiry_in = await inbox_tokens.expire_external_tokens(
                    connection, EXTERNAL_EXPIRED_REASON
                )
                if expiry_in is not None:
                    due_in = expiry_in if due_in is None else min(due_in, expiry_in)
        self._saturated = len(tests) == free  # there may be more due right now
        return self._sleep(full=self._saturated, due_in=due_in)

    def _free_slot(self, test_id: uuid.UUID) -> None:
        if test_id in self.probing:
            self.probing.discard(test_id)
            if self._saturated:
                # Work was waiting for a slot: look now rather than at the next poll. (When
                # nothing was waiting, looking again costs two statements on the verification's
                # critical path and finds nothing.)
                self.hub.wake_workers()

    async def _run(self, test: job_runs.ClaimedTest) -> None:
        test_id = test.id
        heartbeat = asyncio.create_task(self._heartbeat(test_id))
        try:
            login_spacing = self.state.verification_spacing
            if login_spacing > timedelta(0) and not await take_login_slot(
                self.state.db, test, self.worker_id, self.config, login_spacing
            ):
                return  # queued again for its login slot
            logins = Logins(self.state.db, self.state.keyring, self.state.oauth)
            outcome = await observed_attempt(test, logins, self.config, self.tracing)
            # The logins are over: the slot takes the next test while this outcome is stored.
            self._free_slot(test_id)
            await store_outcome(self.state.db, test, self.worker_id, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The attempt counts: retried with backoff like network weather, up to the limit.
            log.exception("connection test crashed", test_id=str(test_id))
            record_crash()
            self._free_slot(test_id)
            try:
                await store_outcome(
                    self.state.db, test, self.worker_id, crashed_outcome(test, self.config)
                )
            except Exception:
                # The lease expires; the claim then retries it or fails it at the limit.
                log.warning("could not record the crash", test_id=str(test_id))
        finally:
            heartbeat.cancel()  # not awaited: nothing waits on it, and it holds nothing
            self.running.pop(test_id, None)
            self._free_slot(test_id)


@dataclass
class Background:
    """What ``inboxd serve`` runs beside the API: the hub always, a worker and a receiver
    unless disabled."""

    settings: Settings
    state: AppState
    run_worker: bool = True
    worker: Worker | None = None
    outbox: OutboxWorker | None = None
    receiver: Receiver | None = None

    async def start(self) -> None:
        assert self.state.hub is not None
        tracing = tracing_for(self.settings)
        if tracing is not None:
            tracing.watch(self.state.db)
        await self.state.hub.start()
        if self.run_worker:
            self.worker = Worker(
                self.state,
                self.state.hub,
                verification_config(self.settings),
                concurrency=self.settings.worker_concurrency,
                lease=timedelta(seconds=self.settings.job_lease_seconds),
                poll_interval=self.settings.job_poll_interval_seconds,
                tracing=tracing,
            )
            await self.worker.start()
            self.outbox = OutboxWorker(
                self.state,
                self.state.hub,
                outbox_config(self.settings),
                concurrency=self.settings.send_concurrency,
                lease=timedelta(seconds=self.settings.send_lease_seconds),
                poll_interval=self.settings.job_poll_interval_seconds,
            )
            await self.outbox.start()
            if self.settings.receiving_enabled:
                self.receiver = Receiver(self.state, receiver_config(self.settings))
                await self.receiver.start()

    async def stop(self) -> None:
        """Stop the receiver, the worker and the outbox side by side (each gets the whole
        grace, not a share of it), then the hub they publish through."""
        grace = self.settings.shutdown_grace_seconds
        stopping = []
        if self.receiver is not None:
            stopping.append(self.receiver.stop())
        if self.worker is not None:
            stopping.append(self.worker.stop(grace))
        if self.outbox is not None:
            stopping.append(self.outbox.stop(grace))
        for outcome in await asyncio.gather(*stopping, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("stopping failed", error=type(outcome).__name__)
        if self.state.hub is not None:
            await self.state.hub.stop()


def start_background(settings: Settings, resolved: Resolved, state: AppState) -> Background:
    return Background(settings, state, run_worker=settings.worker_enabled)


async def run_worker_forever(settings: Settings, resolved: Resolved) -> None:
    state = build_state(settings, resolved)
    background = Background(settings, state, run_worker=True)
    exposition = Exposition(settings)  # metrics on INBOXD_METRICS_PORT, if on
    await exposition.start(state.db, state.hub)
    stop = stop_on_signals()
    await background.start()
    log.info("worker started", event_loop=type(asyncio.get_running_loop()).__module__)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        # Bounded: the grace for running work plus time to release it. A stop that outlasts
        # it is logged with what it waited on, and the process exits anyway.
        try:
            async with asyncio.timeout(settings.shutdown_grace_seconds + 10):
                await background.stop()
                await exposition.stop()
                await state.db.dispose()
        except TimeoutError:
            log_pending_tasks(log)
        stop_tracing(settings)
