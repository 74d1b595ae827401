"""Shared fixtures: one scratch Postgres database and one real inboxd server per test run.

Every test makes its own workspace (``tenant``), so tests never see each other's rows and need
no clean-up between them.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from inboxd.app import create_app
from inboxd.configs import oauth_config, send_limits, verification_config
from inboxd.logs import configure_logging
from inboxd.settings import Settings
from inboxd.worker import Background
from resolvers.state import AppState
from storage import api_keys, workspaces
from storage.db import Database, create_database
from storage.listener import EventHub
from storage.migrate import upgrade
from storage.models import Permission
from storage.rows import WorkspaceRow
from storage.secrets import KeyRing
from tests.support.database import create_scratch, drop_scratch, scratch_database, server_url
from tests.support.dnsserver import DnsTestServer
from tests.support.dovecot import dovecot_left_running
from tests.support.graphql import GraphQLClient
from tests.support.mailservers import MailCerts, make_certs
from tests.support.processes import (
    EMBEDDED_FOLDERS,
    embedded_data_dir,
    stop_postgres_under,
    wait_postgres_gone,
)
from tests.support.unretrieved import UnretrievedExceptions
from tests.support.waiting import wait_until

ALL_PERMISSIONS = (Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX)


@pytest.fixture(scope="session", autouse=True)
def quiet_logs() -> None:
    configure_logging("WARNING")


@pytest.fixture(scope="session", autouse=True)
def no_exception_left_unretrieved() -> Iterator[None]:
    """Fails the run if any future or task of it ended with an exception nobody retrieved."""
    with UnretrievedExceptions() as found:
        yield
    if found.messages:
        pytest.fail("asyncio: " + "; ".join(found.messages[:5]), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def no_postgres_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite ends with no Postgres of its own running (torn down after every other
    session fixture, the embedded test server included)."""
    yield
    folders = [tmp_path_factory.getbasetemp(), *EMBEDDED_FOLDERS]
    left = [p for folder in folders for p in wait_postgres_gone(folder)]
    stopped = [line for folder in folders for line in stop_postgres_under(folder)]
    for folder in EMBEDDED_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"Postgres servers left running by the suite: {stopped}"


@pytest.fixture(scope="session", autouse=True)
def no_dovecot_left_behind() -> Iterator[None]:
    """The suite ends with none of its Dovecot instances running (tests.support.dovecot)."""
    yield
    left = dovecot_left_running()
    assert not left, f"Dovecot processes left running by the suite: {left}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path | None]]:
    # Outside pytest's basetemp: see tests.support.processes.embedded_data_dir.
    with server_url(embedded_data_dir().parent) as found:
        yield found


@pytest.fixture(scope="session")
def database_url(pg_server: tuple[str, Path | None]) -> Iterator[str]:
    with scratch_database(pg_server[0]) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    return KeyRing.parse(KeyRing.generate_spec("test1"))


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsTestServer]:
    """The only DNS server in-test inboxd processes ask; tests add the zones they need."""
    with DnsTestServer() as server:
        yield server


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> MailCerts:
    return make_certs(tmp_path_factory.mktemp("certs"))


def make_settings(
    database_url: str, certs: MailCerts, dns: DnsTestServer | None, **overrides: Any
) -> Settings:
    """Settings for an in-test server: private hosts allowed (every peer is on loopback), DNS
    asked only of the test's own DNS server (or not at all), short timeouts and backoff."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "allow_private_hosts": True,
        "graphiql": True,
        "tls_ca_file": certs.ca_file,
        "dns_check_enabled": dns is not None,
        "dns_nameservers": dns.nameservers if dns else None,
        "dns_port": dns.port if dns else 53,
        "dns_timeout": 1.0,
        "dns_lifetime": 2.0,
        "round_trip_timeout": 5.0,
        # Tests log in as the same few accounts again and again; spacing has its own test.
        "verification_spacing_seconds": 0.0,
        "rate_limit_tests_per_inbox_per_minute": 100,
        "round_trip_poll_interval": 0.2,
        "smtp_connect_timeout": 2.0,
        "smtp_timeout": 5.0,
        "imap_connect_timeout": 2.0,
        "imap_timeout": 5.0,
        "job_retry_base_seconds": 0.2,
        "job_lease_seconds": 5.0,
        "job_poll_interval_seconds": 1.0,
        "shutdown_grace_seconds": 2.0,
        # Receiving has its own tests (tests/inboxd/test_receiving.py), which switch it on.
        "receiving_enabled": False,
        "receiving_lease_seconds": 3.0,
        "receiving_backoff_base_seconds": 0.1,
        "receiving_backoff_max_seconds": 1.0,
        "receiving_poll_interval_seconds": 0.5,
        # The default: no test may depend on the IDLE re-issue to see new mail.
        "receiving_idle_interval_seconds": 600.0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(database_url: str, certs: MailCerts, dns_server: DnsTestServer) -> Settings:
    return make_settings(database_url, certs, dns_server)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url, pool_size=5)
    yield database
    await database.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_app(app: object) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), "uvicorn started", poll=0.01)
    if task.done():
        task.result()  # it failed to start: raise why
    return server, task, f"http://127.0.0.1:{port}"


@dataclass
class Stack:
    """A running inboxd: API on a loopback port, the LISTEN hub and (optionally) a worker."""

    settings: Settings
    state: AppState
    base_url: str
    background: Background
    app: Starlette


@asynccontextmanager
async def running_stack(
    settings: Settings, keyring: KeyRing, *, worker: bool
) -> AsyncIterator[Stack]:
    assert settings.database_url
    state = AppState(
        db=create_database(settings.database_url, pool_size=5),
        keyring=keyring,
        max_page_size=100,
        api_key_touch_interval=timedelta(0),
        hub=EventHub(settings.database_url, connect_timeout=2),
        dns=verification_config(settings).dns,
        allow_private_hosts=settings.allow_private_hosts,
        verification_spacing=timedelta(seconds=settings.verification_spacing_seconds),
        tests_per_inbox_per_minute=settings.rate_limit_tests_per_inbox_per_minute,
        sending=send_limits(settings),
        oauth=oauth_config(settings),
    )
    background = Background(settings, state, run_worker=worker)
    app = create_app(settings, state, on_startup=background.start, on_shutdown=background.stop)
    server, task, url = await serve_app(app)
    assert state.hub is not None
    await asyncio.wait_for(state.hub.wait_connected(), 10)
    try:
        yield Stack(settings, state, url, background, app)
    finally:
        server.should_exit = True
        await task
        await state.db.dispose()


@pytest.fixture(scope="session")
async def stack(settings: Settings, keyring: KeyRing) -> AsyncIterator[Stack]:
    # No worker here: inboxes made by these tests name hosts that must never be contacted.
    async with running_stack(settings, keyring, worker=False) as running:
        yield running


@pytest.fixture(scope="session")
def state(stack: Stack) -> AppState:
    return stack.state


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return stack.base_url


@pytest.fixture(scope="session")
async def anonymous(base_url: str) -> AsyncIterator[GraphQLClient]:
    client = GraphQLClient(base_url)
    yield client
    await client.aclose()


@dataclass
class Tenant:
    workspace: WorkspaceRow
    key: str
    client: GraphQLClient

    async def key_with(self, db: Database, *permissions: Permission) -> str:
        async with db.connection() as connection:
            _, key = await api_keys.create_api_key(connection, self.workspace.id, permissions)
        return key


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
def make_tenant(db: Database, anonymous: GraphQLClient) -> TenantFactory:
    async def make(
        *,
        max_inboxes: int = 50,
        subscription_active: bool = True,
        permissions: tuple[Permission, ...] = ALL_PERMISSIONS,
    ) -> Tenant:
        async with db.connection() as connection, connection.transaction():
            workspace = await workspaces.create_workspace(
                connection,
                f"ws-{secrets.token_hex(6)}",
                max_inboxes=max_inboxes,
                subscription_active=subscription_active,
            )
            _, key = await api_keys.create_api_key(connection, workspace.id, permissions)
        return Tenant(workspace, key, anonymous.with_key(key))

    return make


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()


@dataclass
class Verifier:
    """A stack with a worker, on its own database: only loopback hosts are ever created here."""

    stack: Stack
    db: Database
    anonymous: GraphQLClient

    async def tenant(self, **kwargs: Any) -> Tenant:
        async with self.db.connection() as connection, connection.transaction():
            workspace = await workspaces.create_workspace(
                connection,
                f"ws-{secrets.token_hex(6)}",
                max_inboxes=kwargs.get("max_inboxes", 500),
            )
            _, key = await api_keys.create_api_key(connection, workspace.id, ALL_PERMISSIONS)
        return Tenant(workspace, key, self.anonymous.with_key(key))


@asynccontextmanager
async def verifier_on(
    admin_url: str,
    certs: MailCerts,
    keyring: KeyRing,
    *,
    worker: bool = True,
    dns: DnsTestServer | None = None,
    **overrides: Any,
) -> AsyncIterator[Verifier]:
    url = await create_scratch(admin_url)
    try:
        await asyncio.to_thread(upgrade, url)
        settings = make_settings(url, certs, dns, **overrides)
        async with running_stack(settings, keyring, worker=worker) as running:
            client = GraphQLClient(running.base_url)
            try:
                yield Verifier(running, running.state.db, client)
            finally:
                await client.aclose()
    finally:
        await drop_scratch(admin_url, url)


@pytest.fixture(scope="module")
async def verifier(
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
    dns_server: DnsTestServer,
) -> AsyncIterator[Verifier]:
    async with verifier_on(pg_server[0], certs, keyring, dns=dns_server) as running:
        yield running


VerifierWith = Callable[..., AbstractAsyncContextManager[Verifier]]


@pytest.fixture(scope="session")
def verifier_with(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> VerifierWith:
    """``verifier_on`` this run's Postgres, certificates and keys: ``verifier_with(**settings)``
    starts a stack of a module's own, with those settings overridden (no DNS unless ``dns=``)."""
    return partial(verifier_on, pg_server[0], certs, keyring)


@pytest.fixture(scope="module")
async def receiving(verifier_with: VerifierWith) -> AsyncIterator[Verifier]:
    """A stack with receiving on, one per module. A module whose mail server must outlive the
    stack (a Dovecot) overrides it with one that depends on that server's fixture."""
    async with verifier_with(receiving_enabled=True) as running:
        yield running
