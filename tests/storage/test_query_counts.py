"""How much database work each operation costs, pinned exactly (benchmark figure B7).

Two numbers per operation, both measured on the pools the running server uses (every query
inboxd runs is SQL text on an asyncpg connection of ``Database.connection``; a query logger on
each connection sees it):

- ``statements``: SQL statements, each one round trip (autocommit, or inside a transaction).
- ``round_trips``: everything asyncpg sends and waits for: the statements above plus the
  transaction control (``BEGIN``, ``COMMIT``, ``ROLLBACK``, savepoints).

The counts are exact on purpose: a change that adds a query makes a test here fail, and whoever
made it either removes the query or updates the count and its comment. The list tests pin the
property that matters most: the count does not grow with the page size (no N+1).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mail.network import NetworkPolicy
from mail.probes import ProbeSettings
from resolvers.logins import Logins
from resolvers.oauth_client import OAuthConfig
from resolvers.verification import VerificationConfig, verify
from storage import job_runs, models
from storage.db import Database
from storage.rows import ApiKeyRow, AuditRow, InboxRow, TestRow, WorkspaceRow
from storage.secrets import KeyRing
from tests.conftest import Tenant, TenantFactory, Verifier, verifier_on
from tests.schema.fragments import CREATE, GET, LIST
from tests.support.mailservers import MailCerts, closed_port
from tests.support.waiting import loop_turn

LIST_WITH_TESTS = """
query List($first: Int!) {
  emailInboxes(first: $first) {
    totalCount
    edges { node { id connectionTests(first: 3) { edges { node { id state } } } } }
  }
}"""


def _report(name: str, counts: Counts) -> None:
    """For bench/run.py (B7): append the counts to the file INBOXD_QUERY_COUNTS_OUT names."""
    path = os.environ.get("INBOXD_QUERY_COUNTS_OUT")
    if not path:
        return
    found = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    found[name] = {
        "statements": len(counts.statements),
        "round_trips": counts.round_trips,
    }
    Path(path).write_text(json.dumps(found, indent=1))


@dataclass
class Counts:
    statements: list[str] = field(default_factory=list)
    control: list[str] = field(default_factory=list)  # BEGIN/COMMIT/ROLLBACK, savepoints

    @property
    def round_trips(self) -> int:
        return len(self.statements) + len(self.control)

    def listing(self) -> str:
        return "\n".join(s[:100] for s in self.statements)

    def summary(self) -> tuple[int, int]:
        return len(self.statements), self.round_trips


# Transaction control: what asyncpg's ``connection.transaction()`` sends around statements.
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT ", "RELEASE SAVEPOINT ")


class Recorder:
    """Listens on one database's pools; ``counting()`` collects what happens inside it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.current: Counts | None = None

    def _logged(self, record: Any) -> None:
        if self.current is None:
            return
        query = " ".join(record.query.split())
        if query.rstrip(";").startswith(CONTROL):
            self.current.control.append(query)
        else:
            self.current.statements.append(query)

    @contextmanager
    def counting(self) -> Iterator[Counts]:
        self.current = Counts()
        try:
            yield self.current
        finally:
            self.current = None


@asynccontextmanager
async def recording(db: Database) -> AsyncIterator[Recorder]:
    recorder = Recorder(db)
    # Fresh pools, so that every connection used from here on carries the query logger.
    await db.close_pool()
    db.query_loggers.append(recorder._logged)
    try:
        yield recorder
    finally:
        db.query_loggers.remove(recorder._logged)
        await db.close_pool()  # drop the connections that carry our logger


async def measured(db: Database, operation: Any) -> Counts:
    """Run ``operation`` once to warm the pool and the statement caches, then count a second
    run (so creates must vary their input)."""
    async with recording(db) as recorder:
        await operation()
        await loop_turn()
        with recorder.counting() as counts:
            await operation()
            await loop_turn()  # asyncpg calls query loggers with call_soon
    return counts


def _input(email: str, smtp_port: int = 587, imap_port: int = 993) -> dict[str, Any]:
    return {
        "email": email,
        "smtp": {"host": "smtp.example.com", "port": smtp_port, "password": "pw-123456"},
        "imap": {"host": "imap.example.com", "port": imap_port, "password": "pw-123456"},
    }


def _creator(tenant: Tenant) -> Any:
    async def create() -> str:
        email = f"q{secrets.token_hex(5)}@example.com"
        response = await tenant.client(CREATE, {"input": _input(email)})
        payload = response.data["createEmailInbox"]
        assert payload["__typename"] == "CreateEmailInboxSuccess", payload
        return str(payload["inbox"]["id"])

    return create


async def test_create_inbox(tenant, state):
    counts = await measured(state.db, _creator(tenant))
    _report("create", counts)
    # Authentication (autocommit):
    #   1 SELECT api_key by prefix
    #   2 UPDATE api_key.last_used_at (the test stack touches on every use: interval 0)
    # createEmailInbox (one transaction, storage.inboxes.create_inbox):
    #   3 SELECT workspace ... FOR UPDATE (serialises creates against the plan limit)
    #   4 SELECT count(*) of the workspace's inboxes (after the lock: its own snapshot)
    #     (with login spacing, 3 also takes the accounts' advisory locks and 4 also finds
    #     their latest login: the same number of statements)
    #   5 WITH inbox AS (INSERT email_inbox ... ON CONFLICT DO NOTHING RETURNING ...),
    #     test AS (INSERT connection_test), audit AS (INSERT audit_event),
    #     notified AS (pg_notify jobs, TEST_CHANGED, CREATED) SELECT inbox.*
    assert len(counts.statements) == 5, counts.listing()
    # + BEGIN and COMMIT.
    assert counts.round_trips == 5 + 2, counts.control


async def test_read_one_inbox(tenant, state):
    inbox_id = await _creator(tenant)()

    async def read() -> None:
        response = await tenant.client(GET, {"id": inbox_id})
        assert response.data["emailInbox"]["id"] == inbox_id

    counts = await measured(state.db, read)
    _report("read", counts)
    # 1 SELECT api_key, 2 UPDATE api_key.last_used_at, 3 SELECT email_inbox by id + workspace,
    # each in autocommit: no transaction control.
    assert len(counts.statements) == 3, counts.listing()
    assert counts.round_trips == 3, counts.control


async def test_send_email(tenant, state, db):
    from tests.sending.fragments import SEND
    from tests.sending.test_send_email import active_inbox, message

    inbox_id = await active_inbox(tenant, db)

    async def send() -> None:
        response = await tenant.client(SEND, {"inboxId": inbox_id, "input": message()})
        assert response.data["sendEmail"]["__typename"] == "SendEmailSuccess", response.data

    counts = await measured(state.db, send)
    _report("sendEmail", counts)
    # 1 SELECT api_key, 2 UPDATE api_key.last_used_at, 3 SELECT email_inbox by id + workspace,
    # 4 WITH recent (the minute's sends), counted (INSERT send_count ON CONFLICT DO UPDATE
    #   under the daily limit), queued (INSERT outgoing_message), stored (attachments),
    #   audited (INSERT audit_event), notified (OUTGOING_CHANGED, the workers woken):
    #   storage.outbox.enqueue, one statement in autocommit (no idempotency key).
    assert len(counts.statements) == 4, counts.listing()
    assert counts.round_trips == 4, counts.control


@pytest.fixture
async def fifty(make_tenant: TenantFactory) -> Tenant:
    tenant = await make_tenant(max_inboxes=60)
    create = _creator(tenant)
    for _ in range(50):
        await create()
    return tenant


async def _list_counts(tenant: Tenant, db: Database, first: int, query: str) -> Counts:
    async def page() -> None:
        response = await tenant.client(query, {"first": first})
        assert len(response.data["emailInboxes"]["edges"]) == first

    return await measured(db, page)


async def test_list_is_constant_in_page_size(fifty, state):
    five = await _list_counts(fifty, state.db, 5, LIST)
    all_fifty = await _list_counts(fifty, state.db, 50, LIST)
    _report("list5", five)
    _report("list50", all_fifty)
    # 1 SELECT api_key, 2 UPDATE api_key.last_used_at,
    # 3 SELECT the page (LIMIT first + 1), 4 SELECT count(*) for totalCount.
    assert len(five.statements) == 4, five.listing()
    assert five.round_trips == 4, five.control
    # No N+1: fifty rows cost exactly what five do.
    assert all_fifty.summary() == five.summary()


async def test_list_with_connection_tests_is_constant_in_page_size(fifty, state):
    # EmailInbox.connectionTests is batched per request (resolvers.inboxes.tests_loader).
    five = await _list_counts(fifty, state.db, 5, LIST_WITH_TESTS)
    all_fifty = await _list_counts(fifty, state.db, 50, LIST_WITH_TESTS)
    assert all_fifty.summary() == five.summary()


# --- one verification job -----------------------------------------------------------------


@pytest.fixture(scope="module")
async def jobs_stack(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    # A database of its own: claim_tests takes whatever is due, and the shared database holds
    # other tests' queued jobs, whose hosts must never be contacted. No worker: we run the job.
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as running:
        yield running


def _config() -> VerificationConfig:
    probe = ProbeSettings(
        connect_timeout=2.0,
        overall_timeout=5.0,
        network=NetworkPolicy(allow_private_hosts=True),
    )
    # No DNS check (it would ask a resolver); one attempt, so the outcome is final.
    return VerificationConfig(smtp=probe, imap=probe, dns=None, max_attempts=1)


async def test_verification_job(jobs_stack):
    tenant = await jobs_stack.tenant()
    db = jobs_stack.db
    config = _config()
    worker_id = f"counts-{secrets.token_hex(4)}"

    async def create_and_run() -> None:
        email = f"j{secrets.token_hex(5)}@example.com"
        # Nothing listens on these loopback ports: both logins fail fast (CONNECTION_REFUSED).
        data = _input(email, closed_port(), closed_port())
        data["smtp"]["host"] = data["imap"]["host"] = "127.0.0.1"
        response = await tenant.client(CREATE, {"input": data})
        assert response.data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess"
        await loop_turn()
        with recorder.counting() as counts:
            async with db.connection() as connection:
                claimed = await job_runs.claim_tests(
                    connection,
                    worker_id=worker_id,
                    lease=timedelta(seconds=30),
                    limit=1,
                    max_attempts=config.max_attempts,
                )
            assert len(claimed) == 1
            logins = Logins(db, keyring, OAuthConfig())
            stored = await verify(db, logins, config, claimed[0], worker_id)
            await loop_turn()
        assert stored is not None and stored.state == models.TestState.FAILED.value
        results.append(counts)

    results: list[Counts] = []
    keyring = jobs_stack.stack.state.keyring
    async with recording(db) as recorder:
        await create_and_run()  # warm-up
        await create_and_run()
    counts = results[-1]
    _report("job", counts)
    # Claim, one statement (storage.job_runs.CLAIM_SQL): UPDATE connection_test ... SKIP LOCKED,
    #   UPDATE email_inbox SET status = VERIFYING, pg_notify TEST_CHANGED and STATUS_CHANGED,
    #   returning the inbox: the probes start right after it.
    # Outcome, one statement (storage.job_runs.RECORD_SQL): UPDATE connection_test, UPDATE
    #   email_inbox (status FAILED), pg_notify TEST_CHANGED and STATUS_CHANGED.
    assert len(counts.statements) == 2, counts.listing()
    assert counts.round_trips == 2, counts.control


def test_plain_rows_mirror_the_table_models() -> None:
    # storage.rows declares each column's attribute for the type checker; a column added to a
    # model must be added there too (the rows themselves carry whatever the SELECT returns).
    for row_class, model in (
        (InboxRow, models.EmailInbox),
        (TestRow, models.ConnectionTest),
        (WorkspaceRow, models.Workspace),
        (ApiKeyRow, models.ApiKey),
        (AuditRow, models.AuditEvent),
    ):
        declared = {k for k in row_class.__annotations__ if not k.startswith("__")}
        assert declared == set(model.__table__.columns.keys()), row_class  # type: ignore[attr-defined]
