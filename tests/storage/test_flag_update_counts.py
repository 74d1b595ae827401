"""Flags read with CONDSTORE are written one statement per batch, whatever its size
(``storage.folder_sync.record_flags``), only under the watch lease. The inbox is watched on
pymap (real sockets, a real inboxd stack); the writes are made here, on a database pool of the
test's own, so the receiver's own work is not counted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from storage import folder_sync
from storage.db import create_database
from storage.folder_sync import FlagChange
from storage.messages import LeaseLost
from tests.conftest import Verifier
from tests.inboxd.test_receiving import PASSWORD, create_watched, mail
from tests.storage.test_query_counts import measured
from tests.support.mailservers import MailCerts, tls_mail_servers
from tests.support.waiting import wait_until

USERS = {"counts0@example.test": PASSWORD}
MESSAGES = 30


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with tls_mail_servers(USERS, certs) as servers:
        yield servers


async def test_a_batch_of_flags_costs_one_statement_whatever_its_size(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user = "counts0@example.test"
    tenant = await receiving.tenant()
    inbox_id = uuid.UUID(await create_watched(receiving, tenant, servers, user))
    for n in range(MESSAGES):
        servers["TLS"].deliver(user, mail(f"message {n}"))

    async def all_stored() -> list[int] | None:
        async with receiving.db.connection() as connection:
            uids = await connection.fetch(
                "SELECT uid FROM message WHERE inbox_id = $1 ORDER BY uid", inbox_id
            )
        return [r["uid"] for r in uids] if len(uids) == MESSAGES else None

    uids: list[int] = await wait_until(all_stored, f"{MESSAGES} messages stored")
    async with receiving.db.connection() as connection:
        folder = await folder_sync.folder_state(connection, inbox_id, "INBOX")
    assert folder is not None
    receiver = receiving.stack.background.receiver
    assert receiver is not None
    settings = receiving.stack.settings
    assert settings.database_url
    db = create_database(settings.database_url, pool_size=2)
    modseqs = iter(range(100, 200))

    def recording(changes: list[FlagChange], owner: str = receiver.owner) -> Any:
        async def record() -> None:
            async with db.connection() as connection:
                await folder_sync.record_flags(
                    connection,
                    inbox_id,
                    owner,
                    "INBOX",
                    uidvalidity=folder.uidvalidity,
                    changes=changes,
                    highestmodseq=next(modseqs),
                )

        return record

    try:
        one = await measured(db, recording([FlagChange(uids[0], True, False)]))
        many = await measured(db, recording([FlagChange(uid, True, True) for uid in uids]))
        none = await measured(db, recording([]))
        with pytest.raises(LeaseLost):
            await recording([FlagChange(uids[0], False, False)], owner="someone else")()
    finally:
        await db.dispose()
    assert len(one.statements) == 1, one.listing()
    assert one.round_trips == 1, one.control
    assert many.summary() == one.summary() == none.summary()
    async with receiving.db.connection() as connection:
        flags = await connection.fetch(
            "SELECT seen, flagged FROM message WHERE inbox_id = $1", inbox_id
        )
        stored = await folder_sync.folder_state(connection, inbox_id, "INBOX")
    assert {(r["seen"], r["flagged"]) for r in flags} == {(True, True)}
    assert stored is not None and stored.highestmodseq == 105  # the last call's
