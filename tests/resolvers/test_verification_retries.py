"""What a user reads between attempts: a failure that may pass by itself (network weather, or an
attempt that crashed) says why and when it runs again, and the retry waits its backoff; a
failure on one side names that side."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.inboxd.test_verification import (
    CREATE,
    SEND_TEST,
    TEST_CONNECTION,
    create_and_watch,
    inbox_input,
    latest_test,
    run_test_to_end,
    servers,  # noqa: F401  (fixture)
    statuses,
    working_input,
)
from tests.support.mailservers import MailCerts, closed_port
from tests.support.waiting import wait_until

RETRY_BASE_SECONDS = 60.0


@pytest.fixture(scope="module")
async def slow_retries(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    # A backoff long enough that the retry is still waiting when the test looks at it.
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        job_retry_base_seconds=RETRY_BASE_SECONDS,
        job_max_attempts=3,
    ) as running:
        yield running


async def retry_of(verifier: Verifier, test_id: uuid.UUID) -> tuple[Any, ...]:
    """The test and its inbox once the first attempt's outcome asked for a retry."""

    async def waiting_to_retry() -> tuple[Any, ...] | None:
        async with verifier.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT t.state, t.attempts, t.run_after, t.started_at, i.status,"
                " i.status_reason FROM connection_test t JOIN email_inbox i"
                " ON i.id = t.inbox_id WHERE t.id = $1",
                test_id,
            )
        assert row is not None
        reason = row["status_reason"]
        return tuple(row) if reason and "Retrying" in reason else None

    found: tuple[Any, ...] = await wait_until(
        waiting_to_retry, "the first attempt was recorded with its retry", timeout=30, poll=0.1
    )
    return found


async def test_a_crashed_attempt_says_so_and_waits_its_backoff(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    inbox_id, seen = await create_and_watch(
        slow_retries, tenant, working_input(servers, email="crash-once@example.com")
    )
    assert statuses(seen)[-1] == "ACTIVE"
    async with slow_retries.db.connection() as connection:
        # A value no code path expects: building the endpoint raises.
        await connection.execute(
            "UPDATE email_inbox SET smtp_security = 'CARRIER_PIGEON' WHERE id = $1",
            uuid.UUID(inbox_id),
        )
    started = await tenant.client(TEST_CONNECTION, {"id": inbox_id})
    test_id = uuid.UUID(started.data["testConnection"]["connectionTest"]["id"])

    state, attempts, run_after, started_at, status, reason = await retry_of(slow_retries, test_id)
    assert (state, attempts, status) == ("QUEUED", 1, "PENDING")
    assert reason.startswith("The verification stopped on an unexpected error.")
    assert re.search(r"Retrying \(2 of 3\) at ", reason), reason
    # Full jitter over half the first step up to all of it: at least the base after the start.
    assert (run_after - started_at).total_seconds() >= RETRY_BASE_SECONDS


async def test_a_refused_connection_is_retried_after_its_backoff(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    input = inbox_input(
        closed_port(), "STARTTLS", servers["imap_tls"].port, "TLS", email="refused@example.com"
    )
    created = await tenant.client(CREATE, {"input": input})
    inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
    test_id = uuid.UUID((await latest_test(tenant, inbox_id))["id"])

    state, attempts, run_after, started_at, status, reason = await retry_of(slow_retries, test_id)
    assert (state, attempts, status) == ("QUEUED", 1, "PENDING")
    assert reason.startswith("SMTP CONNECTION_REFUSED: ")
    assert re.search(r"Retrying \(2 of 3\) at ", reason), reason
    assert (run_after - started_at).total_seconds() >= RETRY_BASE_SECONDS


async def test_an_unreadable_imap_password_is_reported_on_the_imap_side(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    inbox_id, seen = await create_and_watch(
        slow_retries, tenant, working_input(servers, email="imap-unreadable@example.com")
    )
    assert statuses(seen)[-1] == "ACTIVE"
    async with slow_retries.db.connection() as connection:
        # Flip one bit of the AEAD tag: no key opens the IMAP password now.
        await connection.execute(
            "UPDATE email_inbox SET imap_password = set_byte(imap_password,"
            " length(imap_password) - 1, get_byte(imap_password, length(imap_password) - 1)"
            " # 1) WHERE id = $1",
            uuid.UUID(inbox_id),
        )
    await tenant.client(TEST_CONNECTION, {"id": inbox_id})

    async def finished() -> dict[str, Any] | None:
        test = await latest_test(tenant, inbox_id)
        return test if test["state"] in ("PASSED", "FAILED") else None

    test = await wait_until(finished, "the test finished", timeout=30, poll=0.1)
    assert test["imap"]["code"] == "SECRET_UNREADABLE" and test["imap"]["ok"] is False
    assert test["imap"]["field"] == "imap.password"
    assert test["smtp"]["ok"] is True  # the other side still logged in


async def test_a_refused_imap_login_with_a_provider_explains_app_passwords(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    input = working_input(servers, email="gmail-user@example.com", imap_password="wrong-one")
    input["provider"] = "GMAIL"
    inbox_id, seen = await create_and_watch(slow_retries, tenant, input)
    assert statuses(seen)[-1] == "FAILED"
    test = await latest_test(tenant, inbox_id)
    assert test["imap"]["code"] == "AUTH_FAILED"
    assert test["imap"]["hint"] is not None and "app password" in test["imap"]["hint"]


async def test_no_test_message_is_sent_when_a_login_failed(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    input = working_input(servers, email="no-round-trip@example.com", imap_password="wrong-one")
    inbox_id, seen = await create_and_watch(slow_retries, tenant, input)
    assert statuses(seen)[-1] == "FAILED"
    delivered = len(servers["smtp_starttls"].messages)
    sent = await tenant.client(SEND_TEST, {"id": inbox_id})
    test_id = sent.data["sendTestEmail"]["connectionTest"]["id"]
    result = await run_test_to_end(slow_retries, tenant, test_id)
    assert result["state"] == "FAILED" and result["imap"]["ok"] is False
    trip = result["roundTrip"]
    assert trip["code"] == "SKIPPED"
    assert (trip["ok"], trip["sent"], trip["deleted"], trip["received"]) == (
        False,
        False,
        False,
        None,
    )
    assert trip["hint"] and "login" in trip["message"]
    assert len(servers["smtp_starttls"].messages) == delivered
