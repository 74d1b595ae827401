"""Work queued by this process (a new inbox's verification, a message) wakes this process's
workers at once, without waiting for the database's notification to come back round: a real
inboxd stack whose LISTEN connection is gone (as while it reconnects) and whose workers would
otherwise sleep 300 s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.sending.test_outbox_worker import PASSWORD, active_inbox, final, mail_servers, send
from tests.support.mailservers import MailCerts

USERS = {"woken@example.test": PASSWORD}


@pytest.fixture
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with mail_servers(certs, USERS) as running:
        yield running


@pytest.fixture
async def sender(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0], certs, keyring, job_poll_interval_seconds=300.0
    ) as running:
        yield running


async def test_work_queued_here_wakes_this_processs_workers_without_the_notification(
    sender: Verifier, servers: dict
) -> None:
    tenant = await sender.tenant()
    hub = sender.stack.state.hub
    assert hub is not None
    await hub.stop()  # no NOTIFY reaches this process any more
    # Each finished long before the workers' 300 s poll: the API woke them.
    inbox_id = await active_inbox(sender, tenant, servers, "woken@example.test")
    queued = await send(tenant, inbox_id, to=["r@example.test"], subject="Now", text="x")
    assert (await final(tenant, queued["id"]))["state"] == "SENT"
