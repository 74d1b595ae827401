"""Several inboxd processes on one database, a database restart, and a worker killed mid-job."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from storage import api_keys, workspaces
from storage.db import create_database
from storage.migrate import upgrade
from storage.models import Permission
from storage.rows import TestRow
from storage.secrets import KeyRing
from tests.conftest import verifier_on
from tests.inboxd.test_verification import inbox_input
from tests.support.database import EmbeddedPostgres
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer
from tests.support.processes import embedded_data_dir
from tests.support.rows import stored_inbox, stored_tests
from tests.support.waiting import wait_until
from tests.support.ws import WSClient

pytestmark = pytest.mark.slow

USER = "alice@example.test"
PASSWORD = "Process-Canary-5521"


def key_spec(ring: KeyRing) -> str:
    return ",".join(f"{k}:{base64.b64encode(ring._keys[k]).decode()}" for k in ring.key_ids)


def process_env(database_url: str, keyring: KeyRing, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXD_")}
    env.update(
        INBOXD_DATABASE_URL=database_url,
        INBOXD_ENCRYPTION_KEYS=key_spec(keyring),
        INBOXD_LOG_LEVEL="WARNING",
        INBOXD_DNS_CHECK_ENABLED="false",
        INBOXD_ALLOW_PRIVATE_HOSTS="true",
        **extra,
    )
    return env


class ServeProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.log_file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inboxd.cli", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            text=True,
        )
        assert self.proc.stdout is not None
        lines = []
        while True:
            line = self.proc.stdout.readline()
            assert line, "inboxd serve exited:\n" + "\n".join(lines) + log.read_text()
            lines.append(line)
            if "press Ctrl+C to stop" in line:
                break
        match = re.search(r"serving GraphQL at (http://\S+)/graphql", "".join(lines))
        assert match
        self.base_url = match.group(1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.log_file.close()


async def make_tenant(database_url: str) -> str:
    db = create_database(database_url, pool_size=1)
    try:
        async with db.connection() as connection, connection.transaction():
            workspace = await workspaces.create_workspace(connection, f"ws-{uuid.uuid4().hex[:8]}")
            _, key = await api_keys.create_api_key(
                connection,
                workspace.id,
                [Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX],
            )
        return key
    finally:
        await db.dispose()


async def gql(base_url: str, key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {key}"},
        )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]  # type: ignore[no-any-return]


CREATE = """mutation($input: CreateEmailInboxInput!) { createEmailInbox(input: $input) {
  ... on CreateEmailInboxSuccess { inbox { id } } } }"""
RENAME = """mutation($id: ID!, $name: String!) { updateEmailInbox(id: $id, input: {name: $name}) {
  __typename } }"""
STATUS = "subscription($id: ID!) { emailInboxStatus(id: $id) { name version } }"
EVENTS = "subscription { emailInboxEvents { kind inboxId version inbox { name } } }"


async def next_inbox_event(ws: WSClient, sub: str, timeout: float) -> dict[str, Any]:
    message = await ws.next_payload(sub, timeout=timeout)
    assert message["type"] == "next", message
    return message["payload"]["data"]["emailInboxEvents"]  # type: ignore[no-any-return]


async def readyz(base_url: str) -> int | None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        try:
            return (await http.get("/readyz")).status_code
        except httpx.HTTPError:
            return None


async def all_ready(*processes: ServeProcess) -> bool:
    return all([await readyz(p.base_url) == 200 for p in processes])


async def none_ready(*processes: ServeProcess) -> bool:
    return all([await readyz(p.base_url) == 503 for p in processes])


async def test_events_cross_processes_and_survive_a_postgres_restart(tmp_path, keyring):
    postgres = EmbeddedPostgres(embedded_data_dir())
    processes: list[ServeProcess] = []
    try:
        await asyncio.to_thread(upgrade, postgres.url)
        key = await make_tenant(postgres.url)
        # No worker: these inboxes name hosts that must never be contacted.
        env = process_env(postgres.url, keyring, INBOXD_WORKER_ENABLED="false")
        a = ServeProcess(env, tmp_path / "a.log")
        processes.append(a)
        b = ServeProcess(env, tmp_path / "b.log")
        processes.append(b)

        ws = await WSClient.connect(b.base_url, key)
        try:
            sub = await ws.subscribe(EVENTS)
            status_sub = None
            # The protocol has no "subscribed" message and b is another process: create inboxes
            # on a until b tells of one (the first may come before the subscription is live).
            created_ids: list[str] = []

            async def created_event() -> dict[str, Any] | None:
                created = await gql(
                    a.base_url,
                    key,
                    CREATE,
                    {
                        "input": {
                            "email": f"multi{len(created_ids)}@example.com",
                            "smtp": {"host": "smtp.example.com", "password": PASSWORD},
                        }
                    },
                )
                created_ids.append(created["createEmailInbox"]["inbox"]["id"])
                try:
                    return await next_inbox_event(ws, sub, timeout=2)
                except TimeoutError:
                    return None

            event = await wait_until(created_event, "b tells of an inbox created on a", poll=0)
            assert event["kind"] == "CREATED" and event["version"] == 1
            assert event["inboxId"] in created_ids
            inbox_id = event["inboxId"]
            status_sub = await ws.subscribe(STATUS, {"id": inbox_id})
            first = await ws.next_payload(status_sub)
            assert first["payload"]["data"]["emailInboxStatus"]["version"] == 1

            await asyncio.to_thread(postgres.stop)
            # Down for as long as both processes need to say so.
            await wait_until(lambda: none_ready(a, b), "both processes report 503 on /readyz")
            await asyncio.to_thread(postgres.start)
            await wait_until(lambda: all_ready(a, b), "both processes ready again")

            # The API recovers by itself; retry the write until the pool has reconnected.
            async def rename() -> dict[str, Any] | None:
                try:
                    return await gql(a.base_url, key, RENAME, {"id": inbox_id, "name": "after"})
                except (AssertionError, httpx.HTTPError):
                    return None

            renamed = await wait_until(rename, "a write succeeds after the restart", poll=0.3)
            assert renamed["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
            # First the notice that events may have been missed while the listener was away,
            # then the change made after it came back.
            event = await next_inbox_event(ws, sub, timeout=20)
            while event["kind"] == "CREATED" and event["inboxId"] in created_ids:
                event = await next_inbox_event(ws, sub, timeout=20)  # late news of a canary
            assert event == {"kind": "RESYNC", "inboxId": None, "version": None, "inbox": None}
            event = await next_inbox_event(ws, sub, timeout=20)
            assert event["kind"] == "UPDATED"
            assert event["inbox"]["name"] == "after"
            status = await ws.next_payload(status_sub, timeout=20)
            assert status["payload"]["data"]["emailInboxStatus"]["name"] == "after"
        finally:
            await ws.close()
    finally:
        for process in processes:
            process.stop()
        await asyncio.to_thread(postgres.close)


async def finished(read: Any) -> TestRow | None:
    row: TestRow = await read()
    return None if row.state in ("QUEUED", "RUNNING") else row


class StallFirstProxy:
    """Forwards to a real server, except that the first connection is held silent: the probe
    that makes it hangs until its worker dies. Records how many connections overlap."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            if self.connections == 1:
                await reader.read()  # until the client side is gone
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                try:
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                finally:
                    dst.close()

            await asyncio.gather(
                pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            self.open -= 1
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_killed_worker_job_is_finished_by_another(
    pg_server, certs: MailCerts, keyring, tmp_path
):
    users = {USER: PASSWORD}
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as stack:
        tenant = await stack.tenant()
        with (
            SmtpServer(SmtpMode.STARTTLS, users, ssl_context=certs.server_context) as smtp,
            ImapServer(ImapMode.TLS, users, ssl_context=certs.server_context) as imap,
        ):
            proxy = StallFirstProxy(smtp.port)
            proxy_port = await proxy.start()
            created = await tenant.client(
                CREATE,
                {
                    "input": inbox_input(
                        proxy_port,
                        "STARTTLS",
                        imap.port,
                        "TLS",
                        email="killed@example.com",
                        smtp_password=PASSWORD,
                        imap_password=PASSWORD,
                    )
                },
            )
            inbox_id = uuid.UUID(created.data["createEmailInbox"]["inbox"]["id"])
            env = process_env(
                stack.stack.settings.database_url or "",
                keyring,
                INBOXD_TLS_CA_FILE=certs.ca_file,
                INBOXD_JOB_LEASE_SECONDS="2",
                INBOXD_JOB_POLL_INTERVAL_SECONDS="0.5",
                INBOXD_SMTP_CONNECT_TIMEOUT="30",
                INBOXD_SMTP_TIMEOUT="60",
            )
            first = subprocess.Popen(
                [sys.executable, "-m", "inboxd.cli", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            second = None
            try:

                async def test_row() -> TestRow:
                    (row,) = await stored_tests(stack.db, [inbox_id])
                    return row

                async def taken() -> bool:
                    return proxy.connections >= 1 and (await test_row()).state == "RUNNING"

                await wait_until(taken, "the first worker took the job")
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)

                with (tmp_path / "second.log").open("wb") as second_log:
                    second = subprocess.Popen(
                        [sys.executable, "-m", "inboxd.cli", "worker"],
                        env={**env, "INBOXD_LOG_LEVEL": "INFO"},
                        stdout=subprocess.DEVNULL,
                        stderr=second_log,
                    )
                row = await wait_until(lambda: finished(test_row), "the job was finished")
                # SIGTERM sets the worker's stop event between callbacks: it stops its receiver,
                # worker and outbox in order and exits 0 (not 143 from a SystemExit raised
                # wherever the signal landed, such as inside an asyncpg callback).
                second.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(second.wait, 60) == 0
            finally:
                for process in (first, second):
                    if process is not None and process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                        process.wait(timeout=20)
                await proxy.close()

            assert row.state == "PASSED", row.error
            # A worker runs on uvloop, as serve does (its I/O holds every mail session).
            logged = (tmp_path / "second.log").read_text().splitlines()
            started = [line for line in logged if "worker started" in line]
            assert len(started) == 1 and "uvloop" in started[0], started
            # The dead worker's attempt, then the successor's once the lease expired: taken
            # over, not started afresh and not retried as a failure.
            assert row.attempts == 2
            assert proxy.max_open == 1  # never two probes of this inbox at once
            inbox = await stored_inbox(stack.db, inbox_id)
            tests = await stored_tests(stack.db, [inbox_id])
            assert inbox.status == "ACTIVE"
            assert len(tests) == 1


async def test_sigterm_releases_running_jobs_and_closes_subscriptions(
    pg_server, certs: MailCerts, keyring, tmp_path
):
    users = {USER: PASSWORD}
    async with verifier_on(pg_server[0], certs, keyring, worker=False) as stack:
        tenant = await stack.tenant()
        with (
            SmtpServer(SmtpMode.STARTTLS, users, ssl_context=certs.server_context) as smtp,
            ImapServer(ImapMode.TLS, users, ssl_context=certs.server_context) as imap,
        ):
            proxy = StallFirstProxy(smtp.port)
            proxy_port = await proxy.start()
            env = process_env(
                stack.stack.settings.database_url or "",
                keyring,
                INBOXD_TLS_CA_FILE=certs.ca_file,
                INBOXD_SMTP_CONNECT_TIMEOUT="30",
                INBOXD_SMTP_TIMEOUT="60",
                INBOXD_SHUTDOWN_GRACE_SECONDS="1",
                INBOXD_JOB_POLL_INTERVAL_SECONDS="0.5",
            )
            served = ServeProcess(env, tmp_path / "serve.log")
            replacement = None
            try:
                created = await gql(
                    served.base_url,
                    tenant.key,
                    CREATE,
                    {
                        "input": inbox_input(
                            proxy_port,
                            "STARTTLS",
                            imap.port,
                            "TLS",
                            email="sigterm@example.com",
                            smtp_password=PASSWORD,
                            imap_password=PASSWORD,
                        )
                    },
                )
                inbox_id = uuid.UUID(created["createEmailInbox"]["inbox"]["id"])
                ws = await WSClient.connect(served.base_url, tenant.key)
                await ws.subscribe(STATUS, {"id": str(inbox_id)})

                async def test_row() -> TestRow:
                    (row,) = await stored_tests(stack.db, [inbox_id])
                    return row

                async def running() -> bool:
                    return (await test_row()).state == "RUNNING" and proxy.connections >= 1

                await wait_until(running, "the served worker took the job")

                served.proc.send_signal(signal.SIGTERM)
                # It exits by itself although its probe hangs: the grace period ended it.
                await asyncio.to_thread(served.proc.wait, 60)
                # The subscriber was told the server is going away, not left hanging.
                with pytest.raises(ConnectionClosed):
                    while True:
                        await ws.receive(timeout=10)
                assert ws.connection.close_code == 1012  # service restart: reconnect elsewhere
                released = await test_row()
                assert released.state == "QUEUED" and released.worker_id is None
                assert released.attempts == 0

                replacement = subprocess.Popen(
                    [sys.executable, "-m", "inboxd.cli", "worker"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                row = await wait_until(lambda: finished(test_row), "the released job was finished")
                assert row.state == "PASSED" and row.attempts == 1
            finally:
                served.stop()
                if replacement is not None:
                    replacement.send_signal(signal.SIGTERM)
                    replacement.wait(timeout=20)
                await proxy.close()
