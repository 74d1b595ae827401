"""sendEmail's promises that need no SMTP server: the outbox row, idempotency, the daily limit
under concurrency, the fields named by validation, cancelling, listing and the audit trail.
The stack here has no worker (nothing is sent), so every accepted message stays QUEUED."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from datetime import UTC, datetime, time, timedelta

from mail.compose import compose
from resolvers.outgoing_mail import outgoing_from_row
from storage import inboxes
from storage.outbox import OUTGOING_COLUMNS, OutgoingRow
from tests.schema.test_inbox_updates import create, mark_verified, update
from tests.sending.fragments import AUDIT, CANCEL, GET, LIST, SEND


def message(**extra: object) -> dict[str, object]:
    return {"to": ["Rita Recipient <rita@example.com>"], "subject": "Hello", "text": "Hi.", **extra}


async def active_inbox(tenant, db, email: str | None = None) -> str:
    inbox = await create(tenant, email or f"sender-{uuid.uuid4().hex[:8]}@example.com")
    await mark_verified(db, str(inbox["id"]))
    return str(inbox["id"])


async def send(tenant, inbox_id: str, **input: object) -> dict:
    response = await tenant.client(SEND, {"inboxId": inbox_id, "input": input})
    return response.data["sendEmail"]


async def test_a_message_is_queued_with_a_message_id_made_by_inboxd(tenant, db):
    inbox_id = await active_inbox(tenant, db, "queue@example.com")
    payload = await send(
        tenant, inbox_id, **message(cc=["carl@example.com"], bcc=["bea@example.com"])
    )
    assert payload["__typename"] == "SendEmailSuccess", payload
    sent = payload["outgoingMessage"]
    assert sent["state"] == "QUEUED" and sent["attempts"] == 0
    assert sent["messageId"].startswith("<") and sent["messageId"].endswith("@example.com>")
    assert sent["to"] == [{"name": "Rita Recipient", "address": "rita@example.com"}]
    assert [a["address"] for a in sent["bcc"]] == ["bea@example.com"]
    read = (await tenant.client(GET, {"id": sent["id"]})).data["outgoingMessage"]
    assert read == sent


async def test_the_same_idempotency_key_returns_the_first_message(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    first = await send(tenant, inbox_id, **message(idempotencyKey="order-17"))
    again = await send(tenant, inbox_id, **message(idempotencyKey="order-17", subject="Other"))
    assert again["__typename"] == "SendEmailSuccess", again
    assert again["outgoingMessage"]["id"] == first["outgoingMessage"]["id"]
    assert again["outgoingMessage"]["subject"] == "Hello"
    # Concurrent sends with one key: still one row.
    results = await asyncio.gather(
        *(send(tenant, inbox_id, **message(idempotencyKey="burst")) for _ in range(6))
    )
    assert len({r["outgoingMessage"]["id"] for r in results}) == 1
    async with db.connection() as connection:
        rows = await connection.fetchval(
            "SELECT count(*) FROM outgoing_message WHERE inbox_id = $1", uuid.UUID(inbox_id)
        )
        counted = await connection.fetchval(
            "SELECT sum(count) FROM send_count WHERE inbox_id = $1", uuid.UUID(inbox_id)
        )
    assert rows == 2 and counted == 2


async def test_a_key_older_than_a_day_queues_a_new_message(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    first = await send(tenant, inbox_id, **message(idempotencyKey="daily-report"))
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE outgoing_message SET created_at = now() - interval '25 hours' WHERE id = $1",
            uuid.UUID(first["outgoingMessage"]["id"]),
        )
    later = await send(tenant, inbox_id, **message(idempotencyKey="daily-report"))
    assert later["outgoingMessage"]["id"] != first["outgoingMessage"]["id"]


async def test_concurrent_sends_queue_exactly_the_daily_limit(tenant, db, database_url):
    inbox_id = await active_inbox(tenant, db)
    async with db.connection() as connection:  # the limit as a user sets it: 1-50
        await connection.execute(
            "UPDATE email_inbox SET daily_send_limit = 4 WHERE id = $1", uuid.UUID(inbox_id)
        )
    results = await asyncio.gather(*(send(tenant, inbox_id, **message()) for _ in range(12)))
    kinds = sorted(r["__typename"] for r in results)
    assert kinds.count("SendEmailSuccess") == 4, kinds
    assert kinds.count("DailySendLimitReached") == 8, kinds
    refused = next(r for r in results if r["__typename"] == "DailySendLimitReached")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert refused["limit"] == 4
    assert refused["resetsAt"] == f"{tomorrow.isoformat()}T00:00:00+00:00"
    # A message for another day counts against that day.
    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert (await send(tenant, inbox_id, **message(sendAt=later)))["__typename"] == (
        "SendEmailSuccess"
    )


async def test_the_daily_limit_counts_the_days_of_the_inbox_time_zone(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    wrong = await update(tenant, inbox_id, {"timeZone": "Mars/Olympus_Mons"})
    assert wrong["__typename"] == "ValidationError", wrong
    assert [f["field"] for f in wrong["fields"]] == ["timeZone"]
    zoned = await update(tenant, inbox_id, {"timeZone": "Pacific/Kiritimati"})  # UTC+14, no DST
    assert zoned["inbox"]["timeZone"] == "Pacific/Kiritimati"
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET daily_send_limit = 1 WHERE id = $1", uuid.UUID(inbox_id)
        )
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    evening = datetime.combine(tomorrow, time(20), tzinfo=UTC)  # there: the next day, 10:00
    local_day = tomorrow + timedelta(days=1)
    assert (await send(tenant, inbox_id, **message(sendAt=evening.isoformat())))[
        "__typename"
    ] == "SendEmailSuccess"
    refused = await send(tenant, inbox_id, **message(sendAt=evening.isoformat()))
    assert refused["__typename"] == "DailySendLimitReached", refused
    # Midnight after that local day, in UTC: 14 hours before the UTC midnight.
    assert refused["resetsAt"] == f"{local_day.isoformat()}T10:00:00+00:00"
    # The same UTC day, but the day before there: its own count.
    morning = datetime.combine(tomorrow, time(8), tzinfo=UTC)  # there: 22:00
    assert (await send(tenant, inbox_id, **message(sendAt=morning.isoformat())))[
        "__typename"
    ] == "SendEmailSuccess"
    async with db.connection() as connection:
        days = await connection.fetch(
            "SELECT day, count FROM send_count WHERE inbox_id = $1 ORDER BY day",
            uuid.UUID(inbox_id),
        )
    assert [(r["day"], r["count"]) for r in days] == [(tomorrow, 1), (local_day, 1)]
    back = await update(tenant, inbox_id, {"timeZone": None})
    assert back["inbox"]["timeZone"] is None


async def test_cancelling_a_queued_message_gives_its_place_back(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET daily_send_limit = 1 WHERE id = $1", uuid.UUID(inbox_id)
        )
    queued = (await send(tenant, inbox_id, **message()))["outgoingMessage"]
    assert (await send(tenant, inbox_id, **message()))["__typename"] == "DailySendLimitReached"
    cancelled = (await tenant.client(CANCEL, {"id": queued["id"]})).data["cancelEmail"]
    assert cancelled["__typename"] == "CancelEmailSuccess", cancelled
    assert cancelled["outgoingMessage"]["state"] == "CANCELLED"
    again = (await tenant.client(CANCEL, {"id": queued["id"]})).data["cancelEmail"]
    assert again["__typename"] == "NotCancellable" and again["state"] == "CANCELLED", again
    assert (await send(tenant, inbox_id, **message()))["__typename"] == "SendEmailSuccess"
    missing = (await tenant.client(CANCEL, {"id": str(uuid.uuid4())})).data["cancelEmail"]
    assert missing["__typename"] == "NotFound"


async def test_only_a_queued_message_can_be_cancelled(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    queued = (await send(tenant, inbox_id, **message()))["outgoingMessage"]
    for state in ("SENDING", "SENT", "FAILED"):
        async with db.connection() as connection:
            await connection.execute(
                "UPDATE outgoing_message SET state = $2 WHERE id = $1",
                uuid.UUID(queued["id"]),
                state,
            )
        refused = (await tenant.client(CANCEL, {"id": queued["id"]})).data["cancelEmail"]
        assert refused["__typename"] == "NotCancellable" and refused["state"] == state


async def test_validation_names_each_field_at_fault(tenant, db, stack):
    inbox_id = await active_inbox(tenant, db)
    payload = await send(
        tenant,
        inbox_id,
        to=["ok@example.com", "not an address", "two@example.com, three@example.com"],
        cc=["x@"],
        subject="Hi",
        text="body",
        headers={"X-Campaign-Id": "7", "Bcc": "sneaky@example.com", "X-Injected": "a"},
        attachments=[
            {"filename": "a.txt", "contentType": "text/plain", "contentBase64": "aGk="},
            {"filename": "b.bin", "contentType": "nonsense", "contentBase64": "not*base64"},
        ],
        idempotencyKey="",
    )
    assert payload["__typename"] == "ValidationError", payload
    fields = {f["field"] for f in payload["fields"]}
    assert fields == {
        "to[1]",
        "to[2]",
        "cc[0]",
        "headers.Bcc",
        "headers.X-Injected",
        "attachments[1].contentType",
        "attachments[1].contentBase64",
        "idempotencyKey",
    }, payload["fields"]
    many = await send(tenant, inbox_id, **message(to=[f"r{n}@example.com" for n in range(51)]))
    assert many["__typename"] == "ValidationError"
    assert many["fields"][0]["field"] == "to" and "too many" in many["fields"][0]["message"]
    # The size cap (INBOXD_SEND_MAX_MESSAGE_BYTES), lowered for this request.
    kept = stack.state.sending
    stack.state.sending = dataclasses.replace(kept, max_message_bytes=2_000)
    try:
        big = base64.b64encode(b"x" * 3_000).decode()
        attachment = {"filename": "big", "contentType": "text/plain", "contentBase64": big}
        too_big = await send(tenant, inbox_id, **message(attachments=[attachment]))
    finally:
        stack.state.sending = kept
    assert too_big["__typename"] == "ValidationError", too_big
    assert [f["field"] for f in too_big["fields"]] == ["attachments"]
    assert "too large" in too_big["fields"][0]["message"]
    nothing = await send(tenant, inbox_id, to=[], subject="x", text="y")
    assert [f["field"] for f in nothing["fields"]] == ["to"]


async def test_an_inbox_that_cannot_send_is_refused(tenant, db):
    pending = await create(tenant, f"pending-{uuid.uuid4().hex[:6]}@example.com")
    refused = await send(tenant, str(pending["id"]), **message())
    assert refused["__typename"] == "InboxNotActive", refused
    assert "PENDING" in refused["message"]
    stranger_inbox = str(uuid.uuid4())
    assert (await send(tenant, stranger_inbox, **message()))["__typename"] == "NotFound"


async def test_sends_are_rate_limited_per_inbox(tenant, db, stack):
    inbox_id = await active_inbox(tenant, db)
    async with db.connection() as connection:
        await connection.execute(
            "UPDATE email_inbox SET daily_send_limit = 50 WHERE id = $1", uuid.UUID(inbox_id)
        )
    per_minute = stack.state.sending.per_inbox_per_minute
    # Spread over days, so that the daily limit is not what stops them.
    days = [datetime.now(UTC) + timedelta(days=1 + n // 50) for n in range(per_minute)]
    for day in days:
        accepted = await send(tenant, inbox_id, **message(sendAt=day.isoformat()))
        assert accepted["__typename"] == "SendEmailSuccess", accepted
    limited = await send(tenant, inbox_id, **message(sendAt=days[-1].isoformat()))
    assert limited["__typename"] == "RateLimited", limited
    assert 1 <= limited["retryAfterSeconds"] <= 60


async def test_the_outbox_is_listed_newest_first_with_a_state_filter(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    ids = [
        (await send(tenant, inbox_id, **message(subject=f"m{n}")))["outgoingMessage"]["id"]
        for n in range(3)
    ]
    await tenant.client(CANCEL, {"id": ids[1]})
    page = (await tenant.client(LIST, {"inboxId": inbox_id, "first": 2})).data["outgoingMessages"]
    assert [e["node"]["subject"] for e in page["edges"]] == ["m2", "m1"]
    assert page["pageInfo"]["hasNextPage"]
    rest = (
        await tenant.client(
            LIST, {"inboxId": inbox_id, "first": 2, "after": page["pageInfo"]["endCursor"]}
        )
    ).data["outgoingMessages"]
    assert [e["node"]["subject"] for e in rest["edges"]] == ["m0"]
    cancelled = (
        await tenant.client(
            LIST, {"inboxId": inbox_id, "first": 5, "filter": {"state": "CANCELLED"}}
        )
    ).data["outgoingMessages"]
    assert [e["node"]["id"] for e in cancelled["edges"]] == [ids[1]]


async def test_send_and_cancel_are_audited_without_the_message(tenant, db):
    inbox_id = await active_inbox(tenant, db)
    secret_body = "the-body-canary-9931"
    queued = await send(tenant, inbox_id, **message(text=secret_body, subject="subject-canary"))
    await tenant.client(CANCEL, {"id": queued["outgoingMessage"]["id"]})
    entries = (await tenant.client(AUDIT, {"inboxId": inbox_id})).data["auditLog"]["edges"]
    actions = [e["node"]["action"] for e in entries]
    assert actions[:2] == ["EMAIL_CANCELLED", "EMAIL_SENT"]
    text = str(entries)
    assert secret_body not in text and "subject-canary" not in text
    assert "rita@example.com" not in text


async def test_the_size_cap_is_exact_at_the_boundary(tenant, db, stack):
    # sendEmail composes only a message that may be near the cap; there it decides exactly.
    inbox_id = await active_inbox(tenant, db)
    body = message(text="Lorem ipsum dolor sit amet. " * 2000)
    first = await send(tenant, inbox_id, **body)
    assert first["__typename"] == "SendEmailSuccess", first
    async with db.connection() as connection:
        row = await connection.fetchrow(
            f"SELECT {OUTGOING_COLUMNS} FROM outgoing_message WHERE id = $1",
            uuid.UUID(first["outgoingMessage"]["id"]),
            record_class=OutgoingRow,
        )
        inbox = await inboxes.get_inbox(connection, row.workspace_id, row.inbox_id)
    # The same input composes to the same length: a Message-ID and a Date of fixed length.
    size = len(compose(outgoing_from_row(inbox, row, [], row.created_at), max_bytes=10**9))
    kept = stack.state.sending
    try:
        stack.state.sending = dataclasses.replace(kept, max_message_bytes=size)
        at_cap = await send(tenant, inbox_id, **body)
        stack.state.sending = dataclasses.replace(kept, max_message_bytes=size - 1)
        over = await send(tenant, inbox_id, **body)
    finally:
        stack.state.sending = kept
    assert at_cap["__typename"] == "SendEmailSuccess", at_cap
    assert over["__typename"] == "ValidationError", over
    assert [f["field"] for f in over["fields"]] == ["text"]
    assert f"would be {size} bytes, over the limit of {size - 1}" in over["fields"][0]["message"]
