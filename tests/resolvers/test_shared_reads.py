"""A read shared by many subscribers (resolvers.inboxes.read_shared) belongs to none of them:
the subscriber that started it may leave, and the others still get the row."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from resolvers import inboxes
from resolvers.auth import authenticate
from storage.db import asyncpg_url
from tests.conftest import Stack, Tenant
from tests.schema.fragments import CREATE, minimal_input

FOLLOWERS = 3


async def blocked_reads(admin: asyncpg.Connection) -> int:
    """Sessions waiting for a lock on email_inbox (the reads behind the held lock)."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%email_inbox%' AND pid <> pg_backend_pid()"
    )
    return count


async def until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.005)


async def test_a_cancelled_leader_never_fails_its_followers(
    stack: Stack, tenant: Tenant, database_url: str
) -> None:
    created = await tenant.client(CREATE, {"input": minimal_input("shared@example.com")})
    inbox_id = uuid.UUID(created.data["createEmailInbox"]["inbox"]["id"])
    principal = await authenticate(stack.state, tenant.key)
    assert principal is not None
    locker = await asyncpg.connect(asyncpg_url(database_url))
    admin = await asyncpg.connect(asyncpg_url(database_url))
    try:
        for version in range(1, 101):  # a key per round: each round's read is a new one
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE email_inbox IN ACCESS EXCLUSIVE MODE")
            leader = asyncio.create_task(
                inboxes.read_shared(stack.state, principal, inbox_id, version)
            )
            await until(lambda: _at_least(admin, 1))
            followers = [
                asyncio.create_task(inboxes.read_shared(stack.state, principal, inbox_id, version))
                for _ in range(FOLLOWERS)
            ]
            await asyncio.sleep(0)  # the followers are waiting on the leader's read
            leader.cancel()
            await transaction.rollback()
            rows = await asyncio.wait_for(asyncio.gather(*followers), 30)
            assert all(row is not None and row.id == inbox_id for row in rows), version
            assert leader.cancelled()
    finally:
        await locker.close()
        await admin.close()


async def _at_least(admin: asyncpg.Connection, count: int) -> bool:
    return await blocked_reads(admin) >= count
