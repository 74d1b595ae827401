"""notifyOnNewMessages end to end: mail arrives in a real pymap mailbox, inboxd's receiver
stores it, and the notice goes out through the outbox worker to a real aiosmtpd, once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from resolvers.validation_inbox_sending import known_time_zones
from storage import messages
from tests.conftest import Verifier
from tests.support.inboxes import create_watched
from tests.support.mailservers import MailCerts, SmtpServer, tls_mail_servers
from tests.support.waiting import wait_until

PASSWORD = "Notice-Canary-3307"
USERS = {f"desk{n}@example.test": PASSWORD for n in range(4)}
AGENT = "agent@example.test"
SUBJECTS = """query($id: ID!) { messages(inboxId: $id, first: 50) {
  edges { node { id subject } } } }"""


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with tls_mail_servers(USERS, certs) as servers:
        yield servers


async def watched_inbox(
    receiving: Verifier, tenant: Any, servers: dict, user: str, **extra: Any
) -> str:
    return await create_watched(tenant, servers, user, PASSWORD, **extra)


def mail(subject: str, *, message_id: str | None = None, date: datetime | None = None) -> bytes:
    message_id = message_id or f"<{uuid.uuid4().hex}@customer.test>"
    dated = f"Date: {format_datetime(date)}\r\n" if date else ""
    return (
        f"From: Carla Customer <carla@customer.test>\r\nTo: desk@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n{dated}\r\n"
        f"The confidential body of {subject}.\r\n"
    ).encode()


def notices(server: SmtpServer, subject: str) -> list:
    wanted = f"Subject: New message: {subject}".encode()
    return [m for m in server.messages if AGENT in m.rcpt_tos and wanted in m.data]


async def stored(tenant: Any, inbox_id: str, subject: str) -> str:
    async def find() -> str | None:
        edges = (await tenant.client(SUBJECTS, {"id": inbox_id})).data["messages"]["edges"]
        return next((e["node"]["id"] for e in edges if e["node"]["subject"] == subject), None)

    return await wait_until(find, f"{subject!r} stored")


async def outbox_keys(receiving: Verifier, inbox_id: str) -> list[str]:
    async with receiving.db.connection() as connection:
        rows = await connection.fetch(
            "SELECT idempotency_key FROM outgoing_message WHERE inbox_id = $1 ORDER BY created_at",
            uuid.UUID(inbox_id),
        )
    return [r["idempotency_key"] for r in rows]


async def test_each_new_message_is_noticed_once(receiving: Verifier, servers: dict) -> None:
    tenant = await receiving.tenant()
    user = "desk0@example.test"
    inbox_id = await watched_inbox(
        receiving, tenant, servers, user, notifyOnNewMessages=True, notificationEmail=AGENT
    )
    imap, smtp = servers["TLS"], servers["smtp"]
    old = datetime.now(UTC) - timedelta(days=3)
    imap.deliver(user, mail("Last week's invoice", date=old))  # as a backfill brings it
    imap.deliver(user, mail("Printer on fire", message_id="<fire@customer.test>"))
    imap.deliver(user, mail("Printer on fire (copy)", message_id="<fire@customer.test>"))
    imap.deliver(user, mail("Still burning"))
    await wait_until(lambda: notices(smtp, "Still burning"), "the last notice delivered")
    fire_id = await stored(tenant, inbox_id, "Printer on fire")
    burning_id = await stored(tenant, inbox_id, "Still burning")
    # One notice per new message: not the old one, not the copy of one already stored.
    assert await outbox_keys(receiving, inbox_id) == [
        f"new-message:{fire_id}",
        f"new-message:{burning_id}",
    ]
    await wait_until(lambda: notices(smtp, "Printer on fire"), "the first notice delivered")
    [notice] = notices(smtp, "Printer on fire")
    assert notice.mail_from == user and notice.rcpt_tos == [AGENT]
    parsed = message_from_bytes(notice.data, policy=policy.default)
    assert parsed["From"].addresses[0].addr_spec == user
    assert parsed["Auto-Submitted"] == "auto-generated"
    text = parsed.get_body(("plain",)).get_content()
    assert "Carla Customer <carla@customer.test>" in text and "Printer on fire" in text
    assert "Received: " in text and fire_id in text
    assert b"confidential body" not in notice.data
    assert notices(smtp, "Last week's invoice") == []


async def test_no_notice_when_off_and_none_over_the_daily_limit(
    receiving: Verifier, servers: dict
) -> None:
    tenant = await receiving.tenant()
    imap = servers["TLS"]
    off = await watched_inbox(receiving, tenant, servers, "desk1@example.test")
    imap.deliver("desk1@example.test", mail("Quiet please"))
    await stored(tenant, off, "Quiet please")  # its notice would be queued with it
    assert await outbox_keys(receiving, off) == []
    # The daily limit counts notices too: the second is dropped, and receiving goes on.
    limited = await watched_inbox(
        receiving, tenant, servers, "desk2@example.test", notifyOnNewMessages=True,
        notificationEmail=AGENT, dailySendLimit=1,
    )  # fmt: skip
    with capture_logs() as logs:
        imap.deliver("desk2@example.test", mail("First of two"))
        imap.deliver("desk2@example.test", mail("Second of two"))
        first = await stored(tenant, limited, "First of two")
        second = await stored(tenant, limited, "Second of two")
    assert await outbox_keys(receiving, limited) == [f"new-message:{first}"]
    dropped = [e for e in logs if "daily send limit" in e["event"]]
    assert [e["message_id"] for e in dropped] == [second], logs


def test_the_notice_day_never_depends_on_postgres_zone_data() -> None:
    # The statement storing a message counts its notice on the inbox's local day. Computed in
    # Postgres (AT TIME ZONE), a zone Python accepts but that Postgres's older zone data lacks
    # (the embedded Postgres did not know America/Coyhaique) failed the statement, and so
    # receiving for that inbox. The day comes from zoneinfo now, for every accepted zone.
    assert "AT TIME ZONE" not in messages.STORE_SQL.upper()
    zones = sorted(known_time_zones())
    assert len(zones) > 300
    for zone in zones:
        assert datetime.now(ZoneInfo(zone)).date()
