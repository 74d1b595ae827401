"""Queueing connection tests (storage/jobs.py): what a queued test records, one open test per
inbox, login spacing per account, the user-requested tests a rate limit counts, and the
newest tests of many inboxes in one query.

Like tests/storage/test_job_runs.py, a stack of its own with no worker: these tests run the
jobs themselves.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from storage import jobs
from storage.job_runs import TestOutcome as Outcome
from tests.conftest import Tenant
from tests.schema.fragments import CREATE, minimal_input
from tests.storage.test_job_runs import claim, db_now, record, stack  # noqa: F401  (fixture)
from tests.support.rows import stored_inbox

SPACING = timedelta(seconds=30)


async def new_inbox(tenant: Tenant, *, username: str | None = None) -> uuid.UUID:
    email = f"queue-{secrets.token_hex(5)}@example.com"
    smtp = {"host": "smtp.example.com", "port": 587, "password": "app-password-1"}
    if username is not None:
        smtp["username"] = username
    created = await tenant.client(CREATE, {"input": minimal_input(email, smtp=smtp)})
    payload = created.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return uuid.UUID(payload["inbox"]["id"])


async def finish_open_test(stack, inbox_id: uuid.UUID) -> None:  # noqa: F811
    worker = f"w-{secrets.token_hex(3)}"
    held = (await claim(stack.db, worker, [inbox_id]))[inbox_id]
    assert await record(stack.db, held.id, worker, Outcome(passed=True, smtp={}, imap={}))


async def enqueue(stack, inbox_id: uuid.UUID, **kwargs):  # noqa: F811
    inbox = await stored_inbox(stack.db, inbox_id)
    async with stack.db.connection() as connection, connection.transaction():
        return await jobs.enqueue_test(connection, inbox, **kwargs)


async def test_a_queued_test_records_what_was_asked_and_stays_the_only_open_one(stack):  # noqa: F811
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)
    await finish_open_test(stack, inbox_id)
    inbox = await stored_inbox(stack.db, inbox_id)

    manual = await enqueue(stack, inbox_id, reason="MANUAL")
    assert (manual.inbox_id, manual.workspace_id) == (inbox_id, tenant.workspace.id)
    assert (manual.state, manual.reason, manual.attempts) == ("QUEUED", "MANUAL", 0)
    assert (manual.round_trip, manual.round_trip_to) == (False, None)
    assert manual.inbox_version == inbox.version
    assert manual.run_after <= await db_now(stack.db)
    # One open test per inbox: asking again returns it.
    again = await enqueue(stack, inbox_id, reason="ROUND_TRIP", round_trip=True)
    assert again.id == manual.id and again.reason == "MANUAL"

    await finish_open_test(stack, inbox_id)
    trip = await enqueue(
        stack, inbox_id, reason="ROUND_TRIP", round_trip=True, round_trip_to="qa@example.com"
    )
    assert trip.id != manual.id
    assert (trip.reason, trip.round_trip, trip.round_trip_to) == (
        "ROUND_TRIP",
        True,
        "qa@example.com",
    )


async def test_only_user_requested_tests_count_towards_the_rate_limit(stack):  # noqa: F811
    tenant = await stack.tenant()
    inbox_id = await new_inbox(tenant)  # its first test: CREATED, not asked for by a user
    await finish_open_test(stack, inbox_id)
    manual = await enqueue(stack, inbox_id, reason="MANUAL")
    await finish_open_test(stack, inbox_id)
    trip = await enqueue(stack, inbox_id, reason="ROUND_TRIP", round_trip=True)
    await finish_open_test(stack, inbox_id)
    await enqueue(stack, inbox_id, reason="SETTINGS_CHANGED")
    other = await new_inbox(tenant)
    await finish_open_test(stack, other)
    await enqueue(stack, other, reason="MANUAL")

    async with stack.db.connection() as connection:
        recent = await jobs.manual_tests_since(connection, inbox_id, timedelta(hours=1))
        none = await jobs.manual_tests_since(connection, inbox_id, timedelta(0))
    assert recent == [manual.created_at, trip.created_at]
    assert none == []


async def test_a_login_to_a_busy_account_waits_its_spacing(stack):  # noqa: F811
    tenant = await stack.tenant()
    shared = f"shared-{secrets.token_hex(4)}"
    later = await new_inbox(tenant, username=shared)
    await finish_open_test(stack, later)
    first = await new_inbox(tenant, username=shared)  # its CREATED test is queued now
    async with stack.db.connection() as connection:
        booked = await jobs.get_open_test(connection, first)
    assert booked is not None

    spaced = await enqueue(stack, later, reason="MANUAL", spacing=SPACING)
    assert spaced.run_after == booked.run_after + SPACING
    # A different account is not held up.
    elsewhere = await new_inbox(tenant, username=f"other-{secrets.token_hex(4)}")
    async with stack.db.connection() as connection:  # no login to its account so far
        await connection.execute("DELETE FROM connection_test WHERE inbox_id = $1", elsewhere)
    free = await enqueue(stack, elsewhere, reason="MANUAL", spacing=SPACING)
    assert free.run_after <= await db_now(stack.db)


async def test_no_spacing_means_due_now_even_beside_a_later_login(stack):  # noqa: F811
    tenant = await stack.tenant()
    shared = f"shared-{secrets.token_hex(4)}"
    waiting, busy = [await new_inbox(tenant, username=shared) for _ in range(2)]
    await finish_open_test(stack, waiting)
    held = (await claim(stack.db, "w1", [busy]))[busy]
    retry_at = (await db_now(stack.db)) + timedelta(hours=1)
    retried = Outcome(passed=False, smtp={}, imap=None, reason="Busy.", retry_at=retry_at)
    assert await record(stack.db, held.id, "w1", retried)
    test = await enqueue(stack, waiting, reason="MANUAL", spacing=timedelta(0))
    assert test.run_after <= await db_now(stack.db)


def test_an_inboxs_two_accounts_are_locked_in_one_order_whatever_their_spelling():
    smtp, imap = ("SMTP.example.com", "Sarah"), ("imap.example.com", "sarah")
    both = ("imap.example.com|sarah", "smtp.example.com|sarah")
    assert jobs.account_lock_keys(smtp, imap) == both
    assert jobs.account_lock_keys(imap, smtp) == both
    # One account for both sides: its one lock, twice.
    same = ("mail.example.com", "Sarah")
    assert jobs.account_lock_keys(same, same) == ("mail.example.com|sarah",) * 2


async def test_the_newest_tests_of_many_inboxes_in_one_query(stack):  # noqa: F811
    tenant = await stack.tenant()
    busy, quiet, new = [await new_inbox(tenant) for _ in range(3)]
    await finish_open_test(stack, busy)
    for _ in range(2):
        await enqueue(stack, busy, reason="MANUAL")
        await finish_open_test(stack, busy)
    async with stack.db.connection() as connection:
        await connection.execute("DELETE FROM connection_test WHERE inbox_id = $1", new)
        every = await connection.fetch(
            "SELECT id FROM connection_test WHERE inbox_id = $1 ORDER BY created_at DESC, id DESC",
            busy,
        )
        two = await jobs.latest_tests(connection, tenant.workspace.id, [busy, quiet, new], 2)
        three = await jobs.latest_tests(connection, tenant.workspace.id, [busy], 3)
        elsewhere = await jobs.latest_tests(connection, uuid.uuid4(), [busy], 2)
    newest = [row["id"] for row in every]
    assert len(newest) == 3
    assert [t.id for t in two[busy][0]] == newest[:2] and two[busy][1] is True
    assert len(two[quiet][0]) == 1 and two[quiet][1] is False
    assert two[new] == ([], False)
    assert [t.id for t in three[busy][0]] == newest and three[busy][1] is False
    assert elsewhere == {busy: ([], False)}
