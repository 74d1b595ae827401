"""A connection test's life as a worker sees it (storage/job_runs.py, storage/jobs.py): claimed
with a lease, the lease extended, the outcome recorded or the test handed back, and the inbox's
status, reason and counters following each step.

A stack of its own with no worker: these tests are the worker. Each claims only its own tests
(``claim``), so what another test of the module left queued does not matter.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from storage import job_runs, jobs
from storage.db import Database
from storage.job_runs import ClaimedTest
from storage.job_runs import TestOutcome as Outcome
from storage.secrets import KeyRing
from tests.conftest import Tenant, Verifier, verifier_on
from tests.schema.fragments import CREATE, minimal_input
from tests.support.mailservers import MailCerts
from tests.support.rows import stored_inbox, stored_test

LEASE = timedelta(seconds=30)


@pytest.fixture(scope="module")
async def stack(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as running:
        yield running


async def new_inbox(tenant: Tenant) -> uuid.UUID:
    email = f"job-{secrets.token_hex(5)}@example.com"
    created = await tenant.client(CREATE, {"input": minimal_input(email)})
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return uuid.UUID(payload["inbox"]["id"])


async def claim(
    db: Database, worker_id: str, inbox_ids: list[uuid.UUID], *, max_attempts: int = 5
) -> dict[uuid.UUID, ClaimedTest]:
    """Claim whatever is due and return the claims of these inboxes, by inbox; the others
    are handed back (``release``) for a later claim."""
    async with db.connection() as connection:
        claimed = await job_runs.claim_tests(
            connection, worker_id=worker_id, lease=LEASE, limit=100, max_attempts=max_attempts
        )
        for other in claimed:
            if other.inbox.id not in inbox_ids:
                assert await job_runs.release(connection, other.id, worker_id)
    return {c.inbox.id: c for c in claimed if c.inbox.id in inbox_ids}


async def db_now(db: Database) -> datetime:
    async with db.connection() as connection:
        now: datetime = await connection.fetchval("SELECT now()")
    return now


async def expire_lease(db: Database, test_id: uuid.UUID) -> None:
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE connection_test SET lease_expires_at = now() - interval '1 second' "
            "WHERE id = $1",
            test_id,
        )


async def record(db: Database, test_id: uuid.UUID, worker_id: str, outcome: Outcome):
    async with db.connection() as connection:
        return await job_runs.record_outcome(connection, test_id, worker_id, outcome)


async def test_a_claim_leases_the_test_and_marks_the_inbox_verifying(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    async with stack.db.connection() as connection:
        queued = await jobs.get_open_test(connection, inbox_id)
    assert queued is not None and queued.state == "QUEUED" and queued.attempts == 0

    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    assert held.id == queued.id
    assert held.attempts == 1
    assert (held.round_trip, held.round_trip_to) == (False, None)
    assert held.lag >= 0.0
    assert held.inbox.status == "VERIFYING" and held.inbox.status_reason is None
    assert held.inbox.version == 2
    test = await stored_test(stack.db, queued.id)
    assert (test.state, test.worker_id, test.attempts, test.version) == ("RUNNING", "w1", 1, 2)
    assert test.started_at is not None
    now = await db_now(stack.db)
    assert now + LEASE - timedelta(seconds=5) < test.lease_expires_at <= now + LEASE
    # Held: nobody else gets it while the lease runs.
    assert await claim(stack.db, "w2", [inbox_id]) == {}


async def test_a_claimed_round_trip_carries_its_recipient(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    first = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    assert await record(stack.db, first.id, "w1", Outcome(passed=True, smtp={}, imap={}))
    inbox = await stored_inbox(stack.db, inbox_id)
    async with stack.db.connection() as connection, connection.transaction():
        queued = await jobs.enqueue_test(
            connection, inbox, reason="ROUND_TRIP", round_trip=True, round_trip_to="qa@example.com"
        )
    trip = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    assert trip.id == queued.id
    assert (trip.round_trip, trip.round_trip_to) == (True, "qa@example.com")


async def test_a_claim_takes_at_most_its_limit(stack):
    tenant = await stack.tenant()
    ids = [await new_inbox(tenant) for _ in range(3)]
    async with stack.db.connection() as connection:
        first = await job_runs.claim_tests(
            connection, worker_id="w1", lease=LEASE, limit=2, max_attempts=5
        )
    assert len(first) == 2
    rest = await claim(stack.db, "w1", ids)
    assert len(rest) + len([c for c in first if c.inbox.id in ids]) == 3


async def test_an_expired_lease_is_taken_over_until_the_attempts_run_out(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    first = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    started = (await stored_test(stack.db, first.id)).started_at
    await expire_lease(stack.db, first.id)

    second = (await claim(stack.db, "w2", [inbox_id], max_attempts=2))[inbox_id]
    assert second.id == first.id and second.attempts == 2
    assert second.lag > 0.0  # due since its lease expired
    test = await stored_test(stack.db, first.id)
    assert test.worker_id == "w2" and test.started_at == started  # the first start is kept

    await expire_lease(stack.db, first.id)
    assert await claim(stack.db, "w3", [inbox_id], max_attempts=2) == {}
    before = await stored_inbox(stack.db, inbox_id)
    async with stack.db.connection() as connection:
        due_in = await job_runs.fail_exhausted_then_next_due(connection, max_attempts=2)
    assert due_in is None or due_in > -60
    test = await stored_test(stack.db, first.id)
    assert (test.state, test.worker_id, test.lease_expires_at) == ("FAILED", None, None)
    assert test.error == job_runs.EXHAUSTED_REASON.format(max_attempts=2)
    assert "each of its 2 attempts" in test.error
    inbox = await stored_inbox(stack.db, inbox_id)
    assert (inbox.status, inbox.status_reason) == ("FAILED", test.error)
    assert inbox.error_count == before.error_count + 1
    assert inbox.version == before.version + 1


async def test_only_the_holder_extends_the_lease(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    before = await stored_test(stack.db, held.id)
    async with stack.db.connection() as connection:
        assert not await job_runs.extend_lease(connection, held.id, "w2", timedelta(hours=1))
        assert not await job_runs.extend_lease(connection, uuid.uuid4(), "w1", timedelta(hours=1))
    assert (await stored_test(stack.db, held.id)).lease_expires_at == before.lease_expires_at
    async with stack.db.connection() as connection:
        assert await job_runs.extend_lease(connection, held.id, "w1", timedelta(hours=1))
    now = await db_now(stack.db)
    extended = (await stored_test(stack.db, held.id)).lease_expires_at
    assert now + timedelta(minutes=59) < extended <= now + timedelta(hours=1)
    # Once recorded, the test is no longer held.
    assert await record(stack.db, held.id, "w1", Outcome(passed=True, smtp={}, imap={}))
    async with stack.db.connection() as connection:
        assert not await job_runs.extend_lease(connection, held.id, "w1", timedelta(hours=1))


async def test_a_pass_activates_the_inbox_and_resets_its_errors(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    async with stack.db.connection() as connection:
        await connection.execute("UPDATE email_inbox SET error_count = 3 WHERE id = $1", inbox_id)
    # Another worker's outcome is discarded: nothing is written.
    outcome = Outcome(
        passed=True,
        smtp={"ok": True, "side": "smtp"},
        imap={"ok": True, "side": "imap"},
        dns={"overall": "OK"},
        round_trip={"sent": True},
    )
    assert await record(stack.db, held.id, "w2", outcome) is None
    assert (await stored_test(stack.db, held.id)).state == "RUNNING"

    stored = await record(stack.db, held.id, "w1", outcome)
    assert stored is not None and stored.id == held.id
    assert (stored.state, stored.worker_id, stored.lease_expires_at) == ("PASSED", None, None)
    assert stored.smtp_result == {"ok": True, "side": "smtp"}
    assert stored.imap_result == {"ok": True, "side": "imap"}
    assert stored.dns_result == {"overall": "OK"}
    assert stored.round_trip_result == {"sent": True}
    assert stored.error is None and stored.finished_at is not None
    inbox = await stored_inbox(stack.db, inbox_id)
    assert (inbox.status, inbox.status_reason, inbox.error_count) == ("ACTIVE", None, 0)
    assert inbox.last_verified_at is not None and inbox.last_check_at is not None
    assert inbox.setup_status == {"overall": "OK"}


async def test_a_failure_counts_an_error_and_keeps_the_last_verification(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    async with stack.db.connection() as connection:
        await connection.execute("UPDATE email_inbox SET error_count = 3 WHERE id = $1", inbox_id)
    stored = await record(
        stack.db,
        held.id,
        "w1",
        Outcome(passed=False, smtp={"ok": False}, imap=None, reason="Login refused."),
    )
    assert stored is not None and (stored.state, stored.error) == ("FAILED", "Login refused.")
    inbox = await stored_inbox(stack.db, inbox_id)
    assert (inbox.status, inbox.status_reason, inbox.error_count) == ("FAILED", "Login refused.", 4)
    assert inbox.last_verified_at is None and inbox.last_check_at is not None


async def test_the_inbox_status_may_differ_from_the_tests_verdict(stack):
    tenant = await stack.tenant()
    ids = [await new_inbox(tenant) for _ in range(2)]
    held = await claim(stack.db, "w1", ids)
    # A failed test of an inbox that still works (inbox_active), and a passed one that does not.
    failed_but_active = await record(
        stack.db,
        held[ids[0]].id,
        "w1",
        Outcome(passed=False, smtp={}, imap={}, reason="Not received.", inbox_active=True),
    )
    passed_but_inactive = await record(
        stack.db, held[ids[1]].id, "w1", Outcome(passed=True, smtp={}, imap={}, inbox_active=False)
    )
    assert failed_but_active is not None and failed_but_active.state == "FAILED"
    assert passed_but_inactive is not None and passed_but_inactive.state == "PASSED"
    active, inactive = [await stored_inbox(stack.db, i) for i in ids]
    assert (active.status, active.error_count) == ("ACTIVE", 0)
    assert active.last_verified_at is not None
    assert (inactive.status, inactive.error_count) == ("FAILED", 1)
    assert inactive.last_verified_at is None


async def test_a_retry_queues_the_test_again_and_says_when(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    before = await stored_inbox(stack.db, inbox_id)
    retry_at = (await db_now(stack.db)) + timedelta(hours=1, microseconds=123456)
    stored = await record(
        stack.db,
        held.id,
        "w1",
        Outcome(
            passed=False,
            smtp={"ok": False},
            imap=None,
            dns={"overall": "OK"},
            reason="Host not found.",
            retry_at=retry_at,
            attempt=1,
            max_attempts=5,
        ),
    )
    assert stored is not None
    assert (stored.state, stored.worker_id, stored.finished_at) == ("QUEUED", None, None)
    assert stored.run_after == retry_at and stored.error == "Host not found."
    inbox = await stored_inbox(stack.db, inbox_id)
    assert inbox.status == "PENDING"
    assert inbox.status_reason == (
        f"Host not found. Retrying (2 of 5) at {retry_at.isoformat(timespec='seconds')}."
    )
    assert inbox.error_count == before.error_count
    assert inbox.last_verified_at is None
    assert inbox.setup_status == before.setup_status  # a retry's DNS result is not kept
    # Not due before its time.
    assert await claim(stack.db, "w1", [inbox_id]) == {}


async def test_a_requeued_test_goes_back_uncounted_with_its_reason(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    later = (await db_now(stack.db)) + timedelta(hours=2)
    async with stack.db.connection() as connection:
        assert not await job_runs.requeue(
            connection, held.id, "w2", run_after=later, reason="Not mine."
        )
        assert await job_runs.requeue(
            connection, held.id, "w1", run_after=later, reason="Waiting for the login slot."
        )
        # No longer held: a second hand-back does nothing.
        assert not await job_runs.requeue(
            connection, held.id, "w1", run_after=None, reason="Again."
        )
    test = await stored_test(stack.db, held.id)
    assert (test.state, test.worker_id, test.lease_expires_at) == ("QUEUED", None, None)
    assert test.run_after == later and test.attempts == 0
    inbox = await stored_inbox(stack.db, inbox_id)
    assert (inbox.status, inbox.status_reason) == ("PENDING", "Waiting for the login slot.")


async def test_a_released_test_is_due_at_once(stack):
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    held = (await claim(stack.db, "w1", [inbox_id]))[inbox_id]
    async with stack.db.connection() as connection:
        assert await job_runs.release(connection, held.id, "w1")
    test = await stored_test(stack.db, held.id)
    assert test.state == "QUEUED" and test.attempts == 0
    assert test.run_after <= await db_now(stack.db)
    inbox = await stored_inbox(stack.db, inbox_id)
    assert (inbox.status, inbox.status_reason) == ("PENDING", job_runs.INTERRUPTED_REASON)
    again = (await claim(stack.db, "w2", [inbox_id]))[inbox_id]
    assert again.id == held.id and again.attempts == 1
