"""How much database work each operation costs, pinned exactly (benchmark figure B7).

Three numbers per operation, all measured on the engine the running server uses:

- ``statements``: SQL statements SQLAlchemy sends (``before_cursor_execute``) plus those run
  on the plain asyncpg pool of the hot reads (``Database.connection``, counted by a query
  logger on its connections). Those run in autocommit: one statement, one round trip.
- ``checkouts``: SQLAlchemy pool checkouts, i.e. sessions opened. With ``pool_pre_ping=True``
  each one costs three extra round trips before the first statement
  (``BEGIN; SELECT ;; ROLLBACK``), plus two of transaction control (``BEGIN`` and
  ``COMMIT``/``ROLLBACK``).
- ``round_trips``: everything asyncpg sends and waits for: the statements above plus the
  transaction control and pre-ping queries (asyncpg's query logger sees those).

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
from sqlalchemy import event

from mail.network import NetworkPolicy
from mail.probes import ProbeSettings
from resolvers.verification import VerificationConfig, verify
from storage import job_runs, models
from storage.db import Database
from storage.rows import InboxRow, TestRow
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
        "checkouts": counts.checkouts,
        "round_trips": counts.round_trips,
    }
    Path(path).write_text(json.dumps(found, indent=1))


@dataclass
class Counts:
    statements: list[str] = field(default_factory=list)
    checkouts: int = 0
    control: list[str] = field(default_factory=list)  # BEGIN/COMMIT/ROLLBACK and pings

    @property
    def round_trips(self) -> int:
        return len(self.statements) + len(self.control)

    def listing(self) -> str:
        return "\n".join(s[:100] for s in self.statements)

    def summary(self) -> tuple[int, int, int]:
        return len(self.statements), self.checkouts, self.round_trips


class Recorder:
    """Listens on one database's two pools; ``counting()`` collects what happens inside it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.current: Counts | None = None

    def _plain(self, record: Any) -> None:
        if self.current is None:
            return
        query = " ".join(record.query.split())
        if query.rstrip(";") in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.current.control.append(query)
        else:
            self.current.statements.append(query)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.current is not None:
            self.current.statements.append(" ".join(statement.split()))

    def _query(self, record: Any) -> None:
        if self.current is not None:
            self.current.control.append(record.query)

    def _checkout(self, *_args: Any) -> None:
        if self.current is not None:
            self.current.checkouts += 1

    def _connect(self, dbapi_connection: Any, _record: Any) -> None:
        # asyncpg's own query logger sees what SQLAlchemy sends outside cursor.execute:
        # BEGIN/COMMIT/ROLLBACK and the pre-ping's "SELECT ;" (prepared statements it runs for
        # cursor.execute are not logged, so nothing is counted twice).
        dbapi_connection._connection.add_query_logger(self._query)

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
    engine = db.engine
    sync_engine = engine.sync_engine
    # Fresh pools, so that every connection used from here on carries the query logger.
    await engine.dispose()
    await db.close_pool()
    db.query_loggers.append(recorder._plain)
    listeners = [
        (sync_engine, "before_cursor_execute", recorder._statement),
        (sync_engine, "checkout", recorder._checkout),
        (sync_engine, "connect", recorder._connect),
    ]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield recorder
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)
        db.query_loggers.remove(recorder._plain)
        await engine.dispose()  # drop the connections that carry our logger
        await db.close_pool()


async def measured(db: Database, operation: Any) -> Counts:
    """Run ``operation`` once to warm the pool and the statement caches (a fresh connection
    skips its first pre-ping), then count a second run (so creates must vary their input)."""
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
    # Authentication (plain asyncpg pool, autocommit):
    #   1 SELECT api_key by prefix
    #   2 UPDATE api_key.last_used_at (the test stack touches on every use: interval 0)
    # createEmailInbox (one transaction on the plain pool, storage.inboxes.create_inbox):
    #   3 SELECT workspace ... FOR UPDATE (serialises creates against the plan limit)
    #   4 SELECT count(*) of the workspace's inboxes (after the lock: its own snapshot)
    #     (with login spacing, 3 also takes the accounts' advisory locks and 4 also finds
    #     their latest login: the same number of statements)
    #   5 WITH inbox AS (INSERT email_inbox ... ON CONFLICT DO NOTHING RETURNING ...),
    #     test AS (INSERT connection_test), audit AS (INSERT audit_event),
    #     notified AS (pg_notify jobs, TEST_CHANGED, CREATED) SELECT inbox.*
    assert len(counts.statements) == 5, counts.listing()
    assert counts.checkouts == 0
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
    # all on the plain asyncpg pool: no session, no transaction control, no pre-ping.
    assert len(counts.statements) == 3, counts.listing()
    assert counts.checkouts == 0
    assert counts.round_trips == 3, counts.control


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
    assert five.checkouts == 0
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
            stored = await verify(db, keyring, config, claimed[0], worker_id)
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
    assert counts.checkouts == 0
    assert counts.round_trips == 2, counts.control


def test_plain_rows_mirror_the_table_models() -> None:
    # storage.rows declares each column's attribute for the type checker; a column added to a
    # model must be added there too (the rows themselves carry whatever the SELECT returns).
    for row_class, model in ((InboxRow, models.EmailInbox), (TestRow, models.ConnectionTest)):
        declared = {k for k in row_class.__annotations__ if not k.startswith("__")}
        assert declared == set(model.__table__.columns.keys()), row_class  # type: ignore[attr-defined]
