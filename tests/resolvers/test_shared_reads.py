"""A read shared by many subscribers (resolvers.inboxes.read_shared) belongs to none of them:
the subscriber that started it may leave, and the others still get the row."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from resolvers import inboxes
from resolvers.auth import authenticate
from storage.api_keys import Principal
from storage.db import asyncpg_url
from storage.rows import InboxRow
from tests.conftest import Stack, Tenant
from tests.schema.fragments import CREATE, minimal_input
from tests.support.waiting import wait_until

FOLLOWERS = 3


async def blocked_reads(admin: asyncpg.Connection) -> int:
    """Sessions waiting for a lock on email_inbox (the reads behind the held lock)."""
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%email_inbox%' AND pid <> pg_backend_pid()"
    )
    return count


async def follow(
    stack: Stack, principal: Principal, inbox_id: uuid.UUID, version: int, waiting: list[int]
) -> InboxRow | None:
    waiting.append(1)  # then read_shared runs up to its await of the shared read
    return await inboxes.read_shared(stack.state, principal, inbox_id, version)


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
            await wait_until(lambda: _at_least(admin, 1), "the leader's read waits for the lock")
            waiting: list[int] = []

            async def follow(
                version: int = version, waiting: list[int] = waiting
            ) -> InboxRow | None:
                waiting.append(1)  # then read_shared runs up to its await of the shared read
                return await inboxes.read_shared(stack.state, principal, inbox_id, version)

            followers = [asyncio.create_task(follow()) for _ in range(FOLLOWERS)]
            await wait_until(
                lambda waiting=waiting: len(waiting) == FOLLOWERS, "followers wait on the read"
            )
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
