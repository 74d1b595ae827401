"""Shared fixtures: one scratch Postgres database and one real inboxd server per test run.

Every test makes its own workspace (``tenant``), so tests never see each other's rows and need
no clean-up between them.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn

from inboxd.app import create_app
from inboxd.logs import configure_logging
from inboxd.settings import Settings
from resolvers.state import AppState
from storage import api_keys, workspaces
from storage.db import Database, create_database
from storage.migrate import upgrade
from storage.models import Permission, Workspace
from storage.secrets import KeyRing
from tests.support.database import scratch_database, server_url
from tests.support.graphql import GraphQLClient

ALL_PERMISSIONS = (Permission.MANAGE_EMAIL_INBOX, Permission.VIEW_EMAIL_INBOX)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path | None]]:
    with server_url(tmp_path_factory.mktemp("postgres")) as found:
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
def settings(database_url: str) -> Settings:
    configure_logging("WARNING")
    return Settings(database_url=database_url, allow_private_hosts=True, graphiql=True)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def state(db: Database, keyring: KeyRing) -> AppState:
    return AppState(db=db, keyring=keyring, max_page_size=100, api_key_touch_interval=timedelta(0))


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
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
async def base_url(settings: Settings, state: AppState) -> AsyncIterator[str]:
    server, task, url = await serve_app(create_app(settings, state))
    yield url
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def anonymous(base_url: str) -> AsyncIterator[GraphQLClient]:
    client = GraphQLClient(base_url)
    yield client
    await client.aclose()


@dataclass
class Tenant:
    workspace: Workspace
    key: str
    client: GraphQLClient

    async def key_with(self, db: Database, *permissions: Permission) -> str:
        async with db.transaction() as session:
            _, key = await api_keys.create_api_key(session, self.workspace.id, permissions)
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
        async with db.transaction() as session:
            workspace = await workspaces.create_workspace(
                session,
                f"ws-{secrets.token_hex(6)}",
                max_inboxes=max_inboxes,
                subscription_active=subscription_active,
            )
            _, key = await api_keys.create_api_key(session, workspace.id, permissions)
        return Tenant(workspace, key, anonymous.with_key(key))

    return make


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> Tenant:
    return await make_tenant()
