"""Delayed tests start at their due time, and logins to one account keep their spacing.

The worker here polls only once an hour: a test that starts at all before the test's outer
timeout was woken by its due time or by NOTIFY, never by the poll. No bound here is a
matter of speed: a start is never before its due time, a login never before its slot.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest

from storage.rows import TestRow
from tests.conftest import Verifier, VerifierWith
from tests.inboxd.test_verification import CREATE, USER, USERS, inbox_input
from tests.support.mailservers import (
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    closed_port,
)
from tests.support.rows import stored_tests
from tests.support.waiting import wait_until

SPACING = 2.0
POLL = 3600.0
# A login and a due time are read from the same clock, Python's and Postgres's, at microsecond
# resolution; a login follows its test's claim, which follows its due time.
CLOCK_EPSILON = 0.001
FINAL = ("PASSED", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def mail(certs: MailCerts) -> Iterator[tuple[SmtpServer, ImapServer]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.STARTTLS, USERS, ssl_context=ctx) as smtp,
        ImapServer(ImapMode.TLS, USERS, ssl_context=ctx) as imap,
    ):
        yield smtp, imap


@pytest.fixture(scope="module")
async def spaced(verifier_with: VerifierWith) -> AsyncIterator[Verifier]:
    async with verifier_with(
        verification_spacing_seconds=SPACING, job_poll_interval_seconds=POLL
    ) as running:
        yield running


async def create(verifier: Verifier, tenant: Any, input: dict[str, object]) -> uuid.UUID:
    response = await tenant.client(CREATE, {"input": input})
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return uuid.UUID(payload["inbox"]["id"])


async def finished_tests(
    verifier: Verifier, inbox_ids: list[uuid.UUID], within: float = 60.0
) -> list[TestRow]:
    """The first test of each inbox, once all of them have finished (in inbox order)."""

    async def read() -> list[TestRow]:
        by_inbox = {row.inbox_id: row for row in await stored_tests(verifier.db, inbox_ids)}
        return [by_inbox[i] for i in inbox_ids if i in by_inbox]

    async def settled() -> list[TestRow] | None:
        tests = await read()
        done = len(tests) == len(inbox_ids) and all(t.state in FINAL for t in tests)
        return tests if done else None

    found: list[TestRow] = await wait_until(
        settled, "every test finished", timeout=within, poll=0.1
    )
    return found


def start_delays(tests: list[TestRow]) -> list[float]:
    """Seconds from each test's due time to its start, as the database recorded them."""
    delays = []
    for test in tests:
        assert test.started_at is not None
        delays.append((test.started_at - test.run_after).total_seconds())
    return delays


def gaps(times: list[datetime] | list[float]) -> list[float]:
    def seconds(value: datetime | float) -> float:
        return value.timestamp() if isinstance(value, datetime) else value

    ordered = sorted(seconds(t) for t in times)
    return [b - a for a, b in itertools.pairwise(ordered)]


def same_account_input(
    mail: tuple[SmtpServer, ImapServer], n: int, **kwargs: Any
) -> dict[str, object]:
    smtp, imap = mail
    return inbox_input(smtp.port, "STARTTLS", imap.port, "TLS", email=f"same-{n}@x.com", **kwargs)


async def test_spaced_tests_start_at_their_own_due_times(spaced, mail):
    tenant = await spaced.tenant()
    smtp, imap = mail
    smtp_before, imap_before = len(smtp.logins), len(imap.logins)
    # The same account three times: due now, in 2 s and in 4 s.
    inbox_ids = [await create(spaced, tenant, same_account_input(mail, n)) for n in range(3)]
    tests = await finished_tests(spaced, inbox_ids)
    assert all(t.state == "PASSED" for t in tests), [t.error for t in tests]

    due_gaps = gaps([t.run_after for t in tests])
    assert all(gap >= SPACING - 0.01 for gap in due_gaps), due_gaps
    delays = start_delays(tests)
    print(f"start delay after the due time (s): {[round(d, 3) for d in delays]}")
    assert all(delay >= 0 for delay in delays), delays  # and each came: woken by its time

    # The servers saw each login at or after its own slot, not together.
    for server, before in ((smtp, smtp_before), (imap, imap_before)):
        logins = [at for user, at in server.logins[before:] if user == USER]
        assert len(logins) == 3
        assert_each_login_in_its_slot(logins, tests)


async def test_a_retry_starts_at_its_due_time(spaced, mail):
    """IMAP refuses the connection (retried), SMTP logs in: its server sees every attempt."""
    smtp, _ = mail
    tenant = await spaced.tenant()
    before = len(smtp.logins)
    inbox_id = await create(
        spaced,
        tenant,
        inbox_input(smtp.port, "STARTTLS", closed_port(), "TLS", email="retried@x.com"),
    )
    [test] = await finished_tests(spaced, [inbox_id])
    assert test.attempts == spaced.stack.settings.job_max_attempts
    logins = [at for user, at in smtp.logins[before:] if user == USER]
    assert len(logins) == test.attempts
    # run_after holds the last retry's due time; its login followed within a second.
    late = logins[-1] - test.run_after.timestamp()
    print(f"last retry's login after its due time: {late:.3f} s")
    assert late >= -CLOCK_EPSILON, late  # and it came within the wait: woken by its time


def assert_each_login_in_its_slot(logins: list[float], tests: list[TestRow]) -> None:
    """The n-th login to an account came no earlier than the n-th booked slot (due time), and
    the slots are SPACING apart: what the server sees is spaced however long a handshake took.
    """
    slots = sorted(t.run_after.timestamp() for t in tests)
    assert all(gap >= SPACING - 0.01 for gap in gaps(slots)), gaps(slots)
    early = [round(slot - at, 3) for at, slot in zip(sorted(logins), slots, strict=True)]
    print(f"logins' times before their slots (s, <= 0 is right): {early}")
    assert all(e <= CLOCK_EPSILON for e in early), early


def logins_of(server: SmtpServer | ImapServer, before: int, username: str) -> list[float]:
    """Login times after index ``before`` whose username is ``username`` in any case."""
    return [at for user, at in server.logins[before:] if user.casefold() == username.casefold()]


def with_account(
    mail: tuple[SmtpServer, ImapServer], n: int, *, host: str = "127.0.0.1", username: str = USER
) -> dict[str, object]:
    input = same_account_input(mail, n)
    for side in ("smtp", "imap"):
        input[side] = {**input[side], "host": host, "username": username}  # type: ignore[dict-item]
    return input


# Two spellings of one account: (first inbox's, second inbox's) host and username.
SPELLINGS = {
    "username-case": lambda user: ({"username": user.upper()}, {"username": user}),
    "localhost": lambda user: (
        {"username": user, "host": "127.0.0.1"},
        {"username": user, "host": "localhost"},
    ),
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_other_spellings_of_one_account_are_spaced(spaced, mail, spelling):
    """Logins to an account of their own (refused, it has no mailbox; an attempt all the same)."""
    tenant = await spaced.tenant()
    smtp, imap = mail
    smtp_before, imap_before = len(smtp.logins), len(imap.logins)
    username = f"spaced-{uuid.uuid4().hex[:8]}@example.test"
    first, second = SPELLINGS[spelling](username)
    inbox_ids = [
        await create(spaced, tenant, with_account(mail, 1, **first)),
        await create(spaced, tenant, with_account(mail, 2, **second)),
    ]
    tests = await finished_tests(spaced, inbox_ids)
    for server, before in ((smtp, smtp_before), (imap, imap_before)):
        logins = logins_of(server, before, username)
        assert len(logins) == 2, server.logins[before:]
        assert_each_login_in_its_slot(logins, tests)
