"""Shared plumbing for the failure drills: everything on loopback, everything started here.

- ``Drill``: a temp dir, a private EmbeddedPostgres (stop/start-able), an encryption key, test
  certificates, and the ``inboxd serve`` / ``inboxd worker`` subprocesses it started (stopped
  by their own Popen handles at the end, never by name).
- ``CountingSmtp`` / ``CountingImap``: the test suite's SMTP and IMAP servers, counting logins
  per username and how many sessions of one username are open at once (a job run twice
  concurrently shows up as 2). ``CountingImap`` can hold each login for ``login_delay`` seconds
  so that a burst keeps jobs in flight long enough to be interrupted.
- ``Api``: a small async GraphQL client (httpx) and the queries the drills send.
- ``read_outcome`` / ``wait_all_final``: every inbox and connection test read back from
  Postgres; ``check_one_final_verification``, ``check_acknowledged``,
  ``check_one_session_each``: what the verification drills require of it.

Inboxes always point at 127.0.0.1; DNS checks are off, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", category=DeprecationWarning)

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from storage import api_keys, workspaces  # noqa: E402
from storage.db import create_database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Permission  # noqa: E402
from storage.secrets import KeyRing  # noqa: E402
from tests.support import mailservers  # noqa: E402
from tests.support.database import EmbeddedPostgres  # noqa: E402
from tests.support.mailservers import (  # noqa: E402
    ImapMode,
    ImapServer,
    MailCerts,
    SmtpMode,
    SmtpServer,
    make_certs,
)

FINAL_TEST_STATES = ("PASSED", "FAILED", "CANCELLED")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- mail servers that count ----------------------------------------------------------------


class CountingSmtp(SmtpServer):
    """SMTP (STARTTLS) counting successful logins per username and open sessions per username."""

    def __init__(self, users: dict[str, str], certs: MailCerts) -> None:
        super().__init__(SmtpMode.STARTTLS, users, ssl_context=certs.server_context)
        # Successful logins per username (the base class's ``logins`` lists every attempt).
        self.login_counts: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _authenticate(self, smtp, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        result = super()._authenticate(smtp, session, envelope, mechanism, data)
        if result.success:
            user = str(result.auth_data)
            with self._lock:
                self.login_counts[user] += 1
                self.active[user] += 1
                self.max_active[user] = max(self.max_active[user], self.active[user])
            session._drill_user = user
        return result

    def _make_protocol(self):  # type: ignore[no-untyped-def]
        protocol = super()._make_protocol()
        original = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            session = protocol.session
            user = getattr(session, "_drill_user", None)
            if user is not None:
                session._drill_user = None
                with self._lock:
                    self.active[user] -= 1
            original(exc)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol


_imap_connection: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("drill_imap")


class _SlowCountingLogin(mailservers._CountingLogin):
    async def authenticate(self, credentials):  # type: ignore[no-untyped-def]
        server = self._server
        delay = 0.0
        if isinstance(server, CountingImap):
            delay = server.slow.get(str(credentials.authcid), server.login_delay)
        if delay:
            await asyncio.sleep(delay)
        identity = await super().authenticate(credentials)
        holder = _imap_connection.get(None)
        if isinstance(server, CountingImap) and holder is not None:
            user = str(credentials.authcid)
            holder["user"] = user
            with server._lock:
                server.login_counts[user] += 1
                server.active[user] += 1
                server.max_active[user] = max(server.max_active[user], server.active[user])
        return identity


# ImapServer._start builds its Login from this module-level name: counting and delay come in here.
mailservers._CountingLogin = _SlowCountingLogin  # type: ignore[misc]


class CountingImap(ImapServer):
    """IMAP (implicit TLS) counting successful logins and open sessions per username."""

    def __init__(
        self,
        users: dict[str, str],
        certs: MailCerts,
        login_delay: float = 0.0,
        slow: dict[str, float] | None = None,
    ) -> None:
        super().__init__(ImapMode.TLS, users, ssl_context=certs.server_context)
        self.login_delay = login_delay
        self.slow = dict(slow or {})  # username -> its own login delay
        # Successful logins per username (the base class's ``logins`` lists every attempt).
        self.login_counts: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holder: dict[str, Any] = {}
        _imap_connection.set(holder)
        try:
            await super().handle(reader, writer)
        finally:
            user = holder.pop("user", None)
            if user is not None:
                with self._lock:
                    self.active[user] -= 1


def mail_users(count: int, prefix: str) -> dict[str, str]:
    return {f"{prefix}{i:04d}@drill.example": f"pw-{prefix}-{i:04d}-Zk8" for i in range(count)}


def inbox_input(user: str, password: str, smtp_port: int, imap_port: int) -> dict[str, Any]:
    return {
        "email": user,
        "smtp": {
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "STARTTLS",
            "username": user,
            "password": password,
        },
        "imap": {
            "host": "127.0.0.1",
            "port": imap_port,
            "security": "TLS",
            "username": user,
            "password": password,
        },
    }


# --- processes --------------------------------------------------------------------------------


class Proc:
    """An inboxd subprocess: ``serve`` (prints its URL) or ``worker``."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path) -> None:
        self.kind = kind
        self.log_path = log_path
        self.log_file = log_path.open("w")
        args = ["serve", "--port", "0", "--no-migrate"] if kind == "serve" else ["worker"]
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inboxd.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
            cwd=str(ROOT),
        )
        self.output: list[str] = []
        self.base_url = ""
        if kind == "serve":
            assert self.proc.stdout is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(
                        "inboxd serve exited:\n" + "".join(self.output) + log_path.read_text()
                    )
                self.output.append(line)
                if "press Ctrl+C to stop" in line:
                    break
            match = re.search(r"serving GraphQL at (http://\S+)/graphql", "".join(self.output))
            if not match:
                raise RuntimeError("no URL in: " + "".join(self.output))
            self.base_url = match.group(1)
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(30) is None:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(5)
        self.log_file.close()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Drill:
    name: str
    tmp: Path = field(init=False)
    postgres: EmbeddedPostgres = field(init=False)
    keyring: KeyRing = field(init=False)
    certs: MailCerts = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    _tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def __post_init__(self) -> None:
        self._tmpdir = tempfile.TemporaryDirectory(prefix=f"inboxd-drill-{self.name}-")
        self.tmp = Path(self._tmpdir.name)
        log(f"{self.name}: temp dir {self.tmp}")
        self.postgres = EmbeddedPostgres(self.tmp / "pg")
        upgrade(self.postgres.url)
        self.keyring = KeyRing.parse(KeyRing.generate_spec("drill1"))
        self.certs = make_certs(self.tmp)

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def env(self, **extra: str) -> dict[str, str]:
        ring = self.keyring
        spec = ",".join(f"{k}:{base64.b64encode(ring._keys[k]).decode()}" for k in ring.key_ids)
        env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXD_")}
        env.update(
            INBOXD_DATABASE_URL=self.database_url,
            INBOXD_ENCRYPTION_KEYS=spec,
            INBOXD_LOG_LEVEL="WARNING",
            INBOXD_HOST="127.0.0.1",
            INBOXD_DNS_CHECK_ENABLED="false",
            # These drills count verification logins; receiving has drills of its own to come.
            INBOXD_RECEIVING_ENABLED="false",
            INBOXD_ALLOW_PRIVATE_HOSTS="true",
            INBOXD_TLS_CA_FILE=self.certs.ca_file,
            # One API key drives all the load: the per-key request limit would refuse most of it.
            INBOXD_RATE_LIMIT_REQUESTS_PER_MINUTE="1000000",
            INBOXD_JOB_LEASE_SECONDS="5",
            INBOXD_JOB_POLL_INTERVAL_SECONDS="1",
            INBOXD_JOB_RETRY_BASE_SECONDS="0.5",
            INBOXD_SMTP_CONNECT_TIMEOUT="5",
            INBOXD_SMTP_TIMEOUT="20",
            INBOXD_IMAP_CONNECT_TIMEOUT="5",
            INBOXD_IMAP_TIMEOUT="20",
        )
        env.update(extra)
        return env

    def start(self, kind: str, label: str, **extra: str) -> Proc:
        proc = Proc(kind, self.env(**extra), self.tmp / f"{label}.log")
        self.procs.append(proc)
        log(f"started {label} ({kind}) pid {proc.pid} {proc.base_url}")
        return proc

    async def tenant_key(self, max_inboxes: int = 5000) -> str:
        db = create_database(self.database_url, pool_size=1)
        try:
            async with db.connection() as connection, connection.transaction():
                workspace = await workspaces.create_workspace(
                    connection, f"drill-{uuid.uuid4().hex[:8]}", max_inboxes=max_inboxes
                )
                _, key = await api_keys.create_api_key(
                    connection,
                    workspace.id,
                    [Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX],
                )
            return key
        finally:
            await db.dispose()

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stop()
            except Exception as exc:  # keep cleaning up
                log(f"stopping pid {proc.pid}: {exc}")
        try:
            self.postgres.close()
        except Exception as exc:
            log(f"stopping postgres: {exc}")
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


# --- GraphQL over HTTP ------------------------------------------------------------------------

CREATE = """mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  __typename ... on CreateEmailInboxSuccess { inbox { id email status } }
  ... on UserError { code message } } }"""
GET = "query($id: ID!) { emailInbox(id: $id) { id status version } }"
LIST = "query { emailInboxes(first: 20) { totalCount edges { node { id status } } } }"


class Api:
    def __init__(self, base_url: str, key: str, timeout: float = 10.0) -> None:
        self.base_url = base_url
        self.key = key
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON body; raises httpx errors, and RuntimeError for 5xx or non-JSON."""
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {self.key}"},
        )
        if response.status_code >= 500:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()  # type: ignore[no-any-return]
        except ValueError:
            status = response.status_code
            raise RuntimeError(f"not JSON ({status}): {response.text[:300]}") from None

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self.http.aclose()


# --- reading the outcome back ----------------------------------------------------------------


@dataclass
class Outcome:
    inboxes: dict[str, dict[str, Any]]  # id -> row
    tests: dict[str, list[dict[str, Any]]]  # inbox id -> its connection tests

    def open_tests(self) -> int:
        return sum(
            1 for ts in self.tests.values() for t in ts if t["state"] not in FINAL_TEST_STATES
        )


async def read_outcome(database_url: str) -> Outcome:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        inboxes = {
            str(r["id"]): dict(r)
            for r in await connection.fetch(
                "SELECT id, email, smtp_username, status, status_reason, version, updated_at "
                "FROM email_inbox"
            )
        }
        tests: dict[str, list[dict[str, Any]]] = {i: [] for i in inboxes}
        for r in await connection.fetch(
            "SELECT id, inbox_id, state, attempts, reason, error, worker_id "
            "FROM connection_test ORDER BY created_at"
        ):
            tests.setdefault(str(r["inbox_id"]), []).append(dict(r))
        return Outcome(inboxes, tests)
    finally:
        await connection.close()


async def wait_all_final(
    database_url: str, expected_inboxes: int, within: float, *, label: str = ""
) -> tuple[Outcome, float]:
    """Poll until every inbox's tests are final (or ``within`` passes); the last outcome."""
    started = time.monotonic()
    last_print = 0.0
    while True:
        try:
            outcome = await read_outcome(database_url)
        except (OSError, asyncpg.PostgresError) as exc:
            log(f"{label} reading the outcome failed: {exc!r}")
            await asyncio.sleep(1)
            continue
        open_ = outcome.open_tests()
        elapsed = time.monotonic() - started
        if open_ == 0 and len(outcome.inboxes) >= expected_inboxes:
            return outcome, elapsed
        if elapsed > within:
            return outcome, elapsed
        if time.monotonic() - last_print > 5:
            last_print = time.monotonic()
            states = Counter(t["state"] for ts in outcome.tests.values() for t in ts)
            log(f"{label} waiting: {len(outcome.inboxes)} inboxes, tests {dict(states)}")
        await asyncio.sleep(0.5)


def check_one_final_verification(
    outcome: Outcome, problems: list[str], *, expect_status: str = "ACTIVE"
) -> Counter[str]:
    """Every inbox has exactly one connection test, final and PASSED, and the expected status."""
    summary: Counter[str] = Counter()
    for inbox_id, inbox in outcome.inboxes.items():
        tests = outcome.tests.get(inbox_id, [])
        summary[f"status={inbox['status']}"] += 1
        summary[f"tests={len(tests)}"] += 1
        for test in tests:
            summary[f"test={test['state']}"] += 1
            summary[f"attempts={test['attempts']}"] += 1
        if len(tests) != 1:
            problems.append(f"inbox {inbox_id} ({inbox['email']}) has {len(tests)} tests")
        if any(t["state"] not in FINAL_TEST_STATES for t in tests):
            problems.append(f"inbox {inbox_id} ({inbox['email']}) has an unfinished test")
        if inbox["status"] != expect_status:
            reason = inbox["status_reason"]
            problems.append(
                f"inbox {inbox_id} ({inbox['email']}) is {inbox['status']} ({reason}); "
                f"tests {[(t['state'], t['attempts'], t['error']) for t in tests]}"
            )
    return summary


def check_acknowledged(outcome: Outcome, acked: dict[str, str], problems: list[str]) -> None:
    """Every acknowledged create (username -> inbox id) has its inbox in the database."""
    for user, inbox_id in acked.items():
        if inbox_id not in outcome.inboxes:
            problems.append(f"acknowledged inbox {inbox_id} ({user}) is missing")


def check_one_session_each(smtp: CountingSmtp, imap: CountingImap, problems: list[str]) -> None:
    """No username had two SMTP or two IMAP sessions open at once (a job run twice at once)."""
    for side, server in (("SMTP", smtp), ("IMAP", imap)):
        doubled = {u: n for u, n in server.max_active.items() if n > 1}
        if doubled:
            problems.append(f"{side}: usernames with 2+ sessions open at once: {doubled}")


def login_totals(smtp: CountingSmtp, imap: CountingImap) -> str:
    return (
        f"SMTP logins {sum(smtp.login_counts.values())}, "
        f"IMAP logins {sum(imap.login_counts.values())}"
    )


def report(name: str, problems: list[str]) -> int:
    if problems:
        log(f"{name}: FAILED, {len(problems)} problem(s):")
        for problem in problems[:40]:
            print("  - " + problem, flush=True)
        if len(problems) > 40:
            print(f"  ... and {len(problems) - 40} more", flush=True)
        return 1
    log(f"{name}: OK, nothing lost")
    return 0
