"""What the receiver writes after each look at a watched mailbox (storage/watch_leases.py): a
failed check is counted on the watch and the inbox, a good one clears both, and enough refused
logins in a row make the inbox FAILED.

A stack of its own with no worker and no receiver: these tests are the receiver, holding the
watch leases they claim.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import watch_leases
from storage.db import Database
from storage.job_runs import TestOutcome as Outcome
from storage.secrets import KeyRing
from storage.watch_leases import WatchError
from tests.conftest import Verifier, verifier_on
from tests.storage.test_job_runs import claim, new_inbox, record
from tests.support.mailservers import MailCerts
from tests.support.rows import stored_inbox

REFUSED = WatchError("AUTH_FAILED", "Login refused.", "Check the IMAP password.")
UNREACHABLE = WatchError("CONNECTION_FAILED", "Connection refused.")


@pytest.fixture(scope="module")
async def stack(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as running:
        yield running


async def watched_inbox(stack: Verifier, owner: str) -> uuid.UUID:
    """A verified (ACTIVE) inbox whose watch lease ``owner`` holds."""
    inbox_id = await new_inbox(await stack.tenant())
    held = (await claim(stack.db, "worker", [inbox_id]))[inbox_id]
    assert await record(stack.db, held.id, "worker", Outcome(passed=True, smtp={}, imap={}))
    async with stack.db.connection() as connection:
        claimed = await watch_leases.claim(connection, owner, lease_seconds=60, limit=1000)
    assert inbox_id in claimed
    return inbox_id


async def fail(db: Database, inbox_id: uuid.UUID, owner: str, error: WatchError) -> bool:
    async with db.connection() as connection:
        return await watch_leases.record_failure(
            connection, inbox_id, owner, error, auth=error is REFUSED, auth_failure_limit=3
        )


async def watch_error(db: Database, inbox_id: uuid.UUID) -> WatchError | None:
    async with db.connection() as connection:
        return (await watch_leases.read_statuses(connection, [inbox_id]))[inbox_id].error


async def test_a_good_check_clears_the_errors_a_failed_one_counted(stack):
    owner = f"receiver-{uuid.uuid4().hex[:8]}"
    inbox_id = await watched_inbox(stack, owner)
    assert (await stored_inbox(stack.db, inbox_id)).error_count == 0

    assert not await fail(stack.db, inbox_id, owner, UNREACHABLE)
    assert not await fail(stack.db, inbox_id, owner, UNREACHABLE)
    failed = await stored_inbox(stack.db, inbox_id)
    assert failed.error_count == 2 and failed.last_check_at is not None
    assert await watch_error(stack.db, inbox_id) == UNREACHABLE

    # A check by a process that does not hold the lease writes nothing.
    async with stack.db.connection() as connection:
        await watch_leases.record_checked(connection, inbox_id, "someone-else")
    assert (await stored_inbox(stack.db, inbox_id)).error_count == 2
    assert await watch_error(stack.db, inbox_id) == UNREACHABLE

    async with stack.db.connection() as connection:
        await watch_leases.record_checked(connection, inbox_id, owner)
    checked = await stored_inbox(stack.db, inbox_id)
    assert checked.error_count == 0
    assert checked.last_check_at > failed.last_check_at
    assert await watch_error(stack.db, inbox_id) is None
    # Counters only: no new version, the inbox stays as it was.
    assert (checked.status, checked.version) == ("ACTIVE", failed.version)


async def test_refused_logins_in_a_row_fail_the_inbox_and_a_good_check_restarts_the_count(
    stack,
):
    owner = f"receiver-{uuid.uuid4().hex[:8]}"
    inbox_id = await watched_inbox(stack, owner)
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    async with stack.db.connection() as connection:
        await watch_leases.record_checked(connection, inbox_id, owner)
    # Two more refusals, then something else: not three refusals in a row.
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    assert not await fail(stack.db, inbox_id, owner, UNREACHABLE)
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    assert not await fail(stack.db, inbox_id, owner, REFUSED)
    before = await stored_inbox(stack.db, inbox_id)
    assert (before.status, before.error_count) == ("ACTIVE", 5)

    assert await fail(stack.db, inbox_id, owner, REFUSED)
    inbox = await stored_inbox(stack.db, inbox_id)
    assert inbox.status == "FAILED"
    assert inbox.status_reason == "IMAP login refused while receiving mail: Login refused."
    assert inbox.error_count == 6 and inbox.version == before.version + 1
    assert await watch_error(stack.db, inbox_id) == REFUSED
