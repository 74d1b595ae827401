"""The event listener through a database outage: while it is away /readyz says so, requests get
SERVICE_UNAVAILABLE, and when it is back every subscriber is told to re-read (RESYNC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg
import httpx

from storage.migrate import upgrade
from tests.conftest import Verifier, make_settings, running_stack, verifier_on
from tests.schema.fragments import CREATE, GET, UPDATE, minimal_input
from tests.support.database import create_scratch, drop_scratch
from tests.support.dbproxy import DatabaseProxy
from tests.support.graphql import GraphQLClient
from tests.support.waiting import subscribed, wait_until
from tests.support.ws import WSClient

EVENTS = "subscription { emailInboxEvents { kind inboxId version inbox { name } } }"
STATUS = "subscription($id: ID!) { emailInboxStatus(id: $id) { name version } }"


async def readyz(base_url: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        return (await http.get("/readyz")).status_code


async def is_ready(base_url: str) -> bool:
    return await readyz(base_url) == 200


async def next_event(ws: WSClient, sub: str) -> dict[str, object]:
    message = await ws.next_payload(sub, timeout=60)
    assert message["type"] == "next", message
    return message["payload"]["data"]["emailInboxEvents"]


@asynccontextmanager
async def stack_behind_proxy(admin_url: str, certs, keyring) -> AsyncIterator[Verifier]:
    url = await create_scratch(admin_url)
    proxy = DatabaseProxy(url)
    await proxy.start()
    try:
        await asyncio.to_thread(upgrade, url)
        settings = make_settings(proxy.url_for(url), certs, None)
        async with running_stack(settings, keyring, worker=False) as running:
            client = GraphQLClient(running.base_url)
            try:
                running.proxy = proxy  # type: ignore[attr-defined]
                yield Verifier(running, running.state.db, client)
            finally:
                await client.aclose()
    finally:
        await proxy.cut()
        await drop_scratch(admin_url, url)


async def test_listener_outage_is_reported_then_resynced(pg_server, certs, keyring):
    async with stack_behind_proxy(pg_server[0], certs, keyring) as stack:
        proxy: DatabaseProxy = stack.stack.proxy  # type: ignore[attr-defined]
        hub = stack.stack.state.hub
        base_url = stack.stack.base_url
        tenant = await stack.tenant()
        created = await tenant.client(CREATE, {"input": minimal_input("outage@example.com")})
        inbox_id = created.data["createEmailInbox"]["inbox"]["id"]
        ws = await WSClient.connect(base_url, tenant.key)
        try:
            events = await ws.subscribe(EVENTS)
            status = await ws.subscribe(STATUS, {"id": inbox_id})
            assert (await ws.next_payload(status))["payload"]["data"]["emailInboxStatus"] == {
                "name": "outage@example.com",
                "version": 1,
            }
            await subscribed(hub, tenant.workspace.id, count=2)

            # The database is unreachable until this test lifts the cut, however fast the
            # listener and the pools retry.
            await proxy.cut()
            try:
                await wait_until(lambda: not hub.connected, "the listener noticed the outage")
                assert await readyz(base_url) == 503
                down = await tenant.client(GET, {"id": inbox_id})
                assert down.status == 200, down.body  # an answer, not a 500
                assert down.error_codes() == ["SERVICE_UNAVAILABLE"]
            finally:
                await proxy.restore()

            # Back by itself: subscribers are told to re-read, then hear of new changes.
            assert await next_event(ws, events) == {
                "kind": "RESYNC",
                "inboxId": None,
                "version": None,
                "inbox": None,
            }
            await wait_until(lambda: is_ready(base_url), "/readyz answers 200 again")
            renamed = await wait_until(
                lambda: renamed_once(tenant, inbox_id), "the pool reconnected by itself"
            )
            assert renamed["version"] == 2
            event = await next_event(ws, events)
            assert (event["kind"], event["inboxId"], event["version"]) == (
                "UPDATED",
                inbox_id,
                2,
            )
            latest = await ws.next_payload(status, timeout=60)
            assert latest["payload"]["data"]["emailInboxStatus"] == {"name": "after", "version": 2}
        finally:
            await ws.close()


async def renamed_once(tenant, inbox_id: str) -> dict[str, object] | None:
    response = await tenant.client(UPDATE, {"id": inbox_id, "input": {"name": "after"}})
    if response.errors:
        return None
    payload = response.data["updateEmailInbox"]
    assert payload["__typename"] == "UpdateEmailInboxSuccess", payload
    return payload["inbox"]


async def test_database_refusing_connections_is_service_unavailable(pg_server, certs, keyring):
    admin_url = pg_server[0]
    async with verifier_on(admin_url, certs, keyring, worker=False) as stack:
        name = urlsplit(stack.stack.settings.database_url or "").path.lstrip("/")
        tenant = await stack.tenant()
        connection = await asyncpg.connect(admin_url, timeout=10)
        try:
            await connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            try:
                down = await tenant.client("{ viewer { inboxUsage } }")
            finally:
                await connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        finally:
            await connection.close()
        assert down.error_codes() == ["SERVICE_UNAVAILABLE"]
