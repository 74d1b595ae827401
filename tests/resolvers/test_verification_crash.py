"""An attempt that crashes is retried like network weather: the user reads that it stopped on an
unexpected error and when it runs again, and the retry waits its backoff."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.inboxd.test_verification import (
    TEST_CONNECTION,
    create_and_watch,
    servers,  # noqa: F401  (fixture)
    statuses,
    working_input,
)
from tests.support.mailservers import MailCerts
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


async def test_a_crashed_attempt_says_so_and_waits_its_backoff(
    slow_retries: Verifier,
    servers: dict[str, Any],  # noqa: F811
) -> None:
    tenant = await slow_retries.tenant()
    inbox_id, seen = await create_and_watch(
        slow_retries, tenant, working_input(servers, email="crash-once@example.com")
    )
    assert statuses(seen)[-1] == "ACTIVE"
    async with slow_retries.db.transaction() as session:
        # A value no code path expects: building the endpoint raises.
        await session.execute(
            text("UPDATE email_inbox SET smtp_security = 'CARRIER_PIGEON' WHERE id = :id"),
            {"id": inbox_id},
        )
    started = await tenant.client(TEST_CONNECTION, {"id": inbox_id})
    test_id = uuid.UUID(started.data["testConnection"]["connectionTest"]["id"])

    async def waiting_to_retry() -> tuple[Any, ...] | None:
        async with slow_retries.db.sessions() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT t.state, t.attempts, t.run_after, t.started_at, i.status,"
                        " i.status_reason FROM connection_test t JOIN email_inbox i"
                        " ON i.id = t.inbox_id WHERE t.id = :id"
                    ),
                    {"id": test_id},
                )
            ).one()
        return tuple(row) if row.status_reason and "Retrying" in row.status_reason else None

    state, attempts, run_after, started_at, status, reason = await wait_until(
        waiting_to_retry, "the crashed attempt was recorded with its retry", timeout=30, poll=0.1
    )
    assert (state, attempts, status) == ("QUEUED", 1, "PENDING")
    assert reason.startswith("The verification stopped on an unexpected error.")
    assert re.search(r"Retrying \(2 of 3\) at ", reason), reason
    # Full jitter over half the first step up to all of it: at least the base after the start.
    assert (run_after - started_at).total_seconds() >= RETRY_BASE_SECONDS
