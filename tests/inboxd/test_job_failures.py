"""A test that cannot run (unreadable password, a crash, a worker that keeps dying) ends
within the attempt limit, with a reason the user can act on, and the inbox leaves VERIFYING."""

from __future__ import annotations

import uuid
from typing import Any

from storage import jobs
from storage.rows import InboxRow, TestRow
from tests.conftest import Verifier
from tests.inboxd.test_verification import (
    INBOX_TESTS,
    TEST_CONNECTION,
    create_and_watch,
    servers,  # noqa: F401  (fixture)
    statuses,
    working_input,
)
from tests.support.rows import stored_inbox, stored_test
from tests.support.waiting import wait_until

FINAL = ("PASSED", "FAILED", "CANCELLED")


async def active_inbox(verifier: Verifier, tenant: Any, mail: Any, email: str) -> uuid.UUID:
    inbox_id, seen = await create_and_watch(verifier, tenant, working_input(mail, email=email))
    assert statuses(seen)[-1] == "ACTIVE"
    return uuid.UUID(inbox_id)


async def damage(verifier: Verifier, inbox_id: uuid.UUID, assignment: str) -> None:
    async with verifier.db.connection() as connection:
        await connection.execute(f"UPDATE email_inbox SET {assignment} WHERE id = $1", inbox_id)


async def final_test(
    verifier: Verifier, test_id: uuid.UUID, within: float = 60.0
) -> tuple[TestRow, InboxRow]:
    async def settled() -> tuple[TestRow, InboxRow] | None:
        test = await stored_test(verifier.db, test_id)
        inbox = await stored_inbox(verifier.db, test.inbox_id)
        return (test, inbox) if test.state in FINAL else None

    found: tuple[TestRow, InboxRow] = await wait_until(
        settled, "the test reached a final state", timeout=within, poll=0.1
    )
    return found


async def run_test_again(tenant: Any, inbox_id: uuid.UUID) -> uuid.UUID:
    response = await tenant.client(TEST_CONNECTION, {"id": str(inbox_id)})
    payload = response.data["testConnection"]
    assert payload["__typename"] == "TestConnectionSuccess", payload
    return uuid.UUID(payload["connectionTest"]["id"])


async def test_unreadable_password_ends_the_test_with_secret_unreadable(verifier, servers):  # noqa: F811
    tenant = await verifier.tenant()
    inbox_id = await active_inbox(verifier, tenant, servers, "unreadable@example.com")
    # Flip one bit of the ciphertext's last byte (inside the AEAD tag): no key opens it now.
    await damage(
        verifier,
        inbox_id,
        "smtp_password = set_byte(smtp_password, length(smtp_password) - 1, "
        "get_byte(smtp_password, length(smtp_password) - 1) # 1)",
    )
    test, inbox = await final_test(verifier, await run_test_again(tenant, inbox_id))

    assert test.state == "FAILED" and test.attempts == 1
    assert test.smtp_result is not None and test.smtp_result["code"] == "SECRET_UNREADABLE"
    assert test.smtp_result["field"] == "smtp.password"
    assert "re-enter the password" in test.smtp_result["hint"].lower()
    assert test.imap_result is not None and test.imap_result["ok"] is True
    assert inbox.status == "FAILED" and "SECRET_UNREADABLE" in (inbox.status_reason or "")
    # What the user reads through the API: a failed side, and why no login was tried.
    shown = await tenant.client(INBOX_TESTS, {"id": str(inbox_id)})
    assert not shown.errors, shown.errors
    edges = shown.data["emailInbox"]["connectionTests"]["edges"]
    smtp = next(e["node"] for e in edges if e["node"]["id"] == str(test.id))["smtp"]
    assert smtp["ok"] is False and smtp["code"] == "SECRET_UNREADABLE"
    assert "can no longer be decrypted" in smtp["message"]
    assert smtp["field"] == "smtp.password"


async def test_a_crashing_attempt_counts_and_stops_at_the_limit(verifier, servers):  # noqa: F811
    tenant = await verifier.tenant()
    inbox_id = await active_inbox(verifier, tenant, servers, "crashing@example.com")
    # A value no code path expects: building the endpoint raises, every attempt.
    await damage(verifier, inbox_id, "smtp_security = 'CARRIER_PIGEON'")
    test, inbox = await final_test(verifier, await run_test_again(tenant, inbox_id))

    assert test.state == "FAILED"
    assert test.attempts == verifier.stack.settings.job_max_attempts
    assert inbox.status == "FAILED" and "unexpected error" in (inbox.status_reason or "")


async def test_a_test_whose_worker_died_on_every_attempt_fails(verifier, servers):  # noqa: F811
    tenant = await verifier.tenant()
    inbox_id = await active_inbox(verifier, tenant, servers, "dead-worker@example.com")
    test_id = uuid.uuid4()
    limit = verifier.stack.settings.job_max_attempts
    # What a worker killed during the last allowed attempt leaves behind.
    async with verifier.db.connection() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO connection_test (id, inbox_id, workspace_id, state, reason, "
            "round_trip, inbox_version, attempts, run_after, lease_expires_at, worker_id, "
            "created_at, started_at, version) "
            "SELECT $1, id, workspace_id, 'RUNNING', 'MANUAL', false, version, "
            "$3, now(), now() - interval '1 second', 'gone:1:x', now(), now(), 1 "
            "FROM email_inbox WHERE id = $2",
            test_id,
            inbox_id,
            limit,
        )
        await connection.execute(f"NOTIFY {jobs.JOBS_CHANNEL}")
    test, inbox = await final_test(verifier, test_id)

    assert test.state == "FAILED" and test.attempts == limit
    assert inbox.status == "FAILED" and "each of its" in (inbox.status_reason or "")
