"""The event stream itself (LISTEN, no subscription): each inbox event says the status the
inbox had at the event's version, so the sequence can be rebuilt from the stream alone."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from storage.db import asyncpg_url
from storage.events import CHANNEL, Event, EventKind
from tests.inboxd.test_verification import (
    CREATE,
    servers,  # noqa: F401  (fixture)
    working_input,
)


async def test_stream_gives_each_version_its_own_status(verifier, servers):  # noqa: F811
    tenant = await verifier.tenant()
    received: asyncio.Queue[Event] = asyncio.Queue()
    connection: Any = await asyncpg.connect(asyncpg_url(verifier.stack.settings.database_url))
    try:
        await connection.add_listener(
            CHANNEL, lambda _c, _pid, _ch, payload: received.put_nowait(Event.decode(payload))
        )
        response = await tenant.client(
            CREATE, {"input": working_input(servers, email="stream@example.com")}
        )
        inbox_id = uuid.UUID(response.data["createEmailInbox"]["inbox"]["id"])
        inbox_events: list[Event] = []
        test_events: list[Event] = []
        async with asyncio.timeout(30):
            while not inbox_events or inbox_events[-1].status not in ("ACTIVE", "FAILED"):
                event = await received.get()
                if event.inbox_id != inbox_id:
                    continue
                if event.kind is EventKind.TEST_CHANGED:
                    test_events.append(event)
                else:
                    inbox_events.append(event)
    finally:
        await connection.close()

    assert [(e.kind, e.version, e.status) for e in inbox_events] == [
        (EventKind.CREATED, 1, "PENDING"),
        (EventKind.STATUS_CHANGED, 2, "VERIFYING"),
        (EventKind.STATUS_CHANGED, 3, "ACTIVE"),
    ]
    # The test's own events count the test's versions: queued, running, passed.
    assert [e.version for e in test_events] == [1, 2, 3]
    assert all(e.status is None and e.test_id is not None for e in test_events)
