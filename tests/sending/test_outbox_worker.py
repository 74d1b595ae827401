"""The sending worker end to end: a real inboxd stack with its worker, real aiosmtpd (the DATA
as received) and pymap (the Sent folder) on loopback; states followed over graphql-transport-ws."""

from __future__ import annotations

import base64
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aioimaplib
import pytest

from storage.jobs import JOBS_CHANNEL
from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.sending.fragments import FOLLOW, GET, SEND
from tests.support.mailservers import ImapMode, ImapServer, MailCerts, SmtpMode, SmtpServer
from tests.support.waiting import wait_until
from tests.support.ws import WSClient

PASSWORD = "Send-Canary-5521"
USERS = {f"sender{n}@example.test": PASSWORD for n in range(14)}
CREATE = """
mutation($input: CreateEmailInboxInput!) {
  createEmailInbox(input: $input) { __typename ... on CreateEmailInboxSuccess { inbox { id } } }
}"""
STATUS = "query($id: ID!) { emailInbox(id: $id) { status statusReason } }"


@contextmanager
def mail_servers(certs: MailCerts, users: dict[str, str]) -> Iterator[dict[str, Any]]:
    """aiosmtpd and pymap over implicit TLS for ``users``, as ``{"smtp": ..., "imap": ...}``."""
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.TLS, users, ssl_context=ctx) as smtp,
        ImapServer(ImapMode.TLS, users, ssl_context=ctx) as imap,
    ):
        yield {"smtp": smtp, "imap": imap}


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    ctx = certs.server_context
    with (
        SmtpServer(SmtpMode.TLS, USERS, ssl_context=ctx) as smtp,
        SmtpServer(SmtpMode.TLS, USERS, ssl_context=ctx, size_limit=300) as small,
        ImapServer(ImapMode.TLS, USERS, ssl_context=ctx) as imap,
    ):
        yield {"smtp": smtp, "small": small, "imap": imap}


@pytest.fixture(scope="module")
async def sender(
    pg_server: tuple[str, Path | None], certs: MailCerts, keyring: KeyRing
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0],
        certs,
        keyring,
        send_retry_base_seconds=0.05,
        send_retry_cap_seconds=0.2,
        send_max_attempts=3,
    ) as running:
        yield running


async def active_inbox(
    sender: Verifier, tenant: Any, servers: dict, user: str, smtp: str = "smtp", **extra: Any
) -> str:
    created = await tenant.client(
        CREATE,
        {
            "input": {
                **extra,
                "email": user,
                "displayName": "Sandra Sender",
                "signature": "<p>Sandra, <b>Sales</b></p>",
                "smtp": {"host": "127.0.0.1", "port": servers[smtp].port, "security": "TLS",
                         "password": PASSWORD},
                "imap": {"host": "127.0.0.1", "port": servers["imap"].port, "security": "TLS",
                         "password": PASSWORD},
            }
        },
    )  # fmt: skip
    assert created.data["createEmailInbox"]["__typename"] == "CreateEmailInboxSuccess", created
    inbox_id: str = created.data["createEmailInbox"]["inbox"]["id"]

    async def active() -> bool:
        inbox = (await tenant.client(STATUS, {"id": inbox_id})).data["emailInbox"]
        assert inbox["status"] != "FAILED", inbox
        return inbox["status"] == "ACTIVE"

    await wait_until(active, f"inbox {inbox_id} ACTIVE")
    return inbox_id


async def send(tenant: Any, inbox_id: str, **input: Any) -> dict:
    payload = (await tenant.client(SEND, {"inboxId": inbox_id, "input": input})).data["sendEmail"]
    assert payload["__typename"] == "SendEmailSuccess", payload
    return payload["outgoingMessage"]


async def final(tenant: Any, outgoing_id: str) -> dict:
    async def done() -> dict | None:
        row = (await tenant.client(GET, {"id": outgoing_id})).data["outgoingMessage"]
        return row if row["state"] in ("SENT", "FAILED", "CANCELLED") else None

    return await wait_until(done, f"outgoing {outgoing_id} finished")


def delivered(server: SmtpServer, message_id: str) -> list:
    return [m for m in server.messages if message_id.encode() in m.data]


async def test_a_subscriber_sees_queued_sending_sent_and_the_data_is_the_message(
    sender: Verifier, servers: dict
) -> None:
    tenant = await sender.tenant()
    user = "sender0@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    # Due shortly: the subscription is open before the worker takes it.
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    queued = await send(
        tenant,
        inbox_id,
        to=["Rita <rita@example.test>"],
        bcc=["hidden@example.test"],
        subject="Quarterly numbers",
        text="Numbers attached.",
        sendAt=soon,
    )
    ws = await WSClient.connect(sender.stack.base_url, tenant.key)
    try:
        sub = await ws.subscribe(FOLLOW, {"id": queued["id"]})
        states = []
        while True:
            message = await ws.next_payload(sub, timeout=30)
            if message["type"] != "next":
                assert message["type"] == "complete", message
                break
            shown = message["payload"]["data"]["outgoingMessage"]
            states.append(shown["state"])
            last = shown
    finally:
        await ws.close()
    assert states == ["QUEUED", "SENDING", "SENT"], states
    assert last["lastCode"] == 250 and last["sentAt"]
    [received] = delivered(servers["smtp"], queued["messageId"])
    assert received.mail_from == user
    assert sorted(received.rcpt_tos) == ["hidden@example.test", "rita@example.test"]
    parsed = message_from_bytes(received.data, policy=policy.default)
    assert parsed["Message-ID"] == queued["messageId"]
    assert parsed["Subject"] == "Quarterly numbers"
    assert "Sandra Sender" in parsed["From"] and user in parsed["From"]
    assert parsed["Bcc"] is None and b"hidden@example.test" not in received.data


async def test_a_5xx_fails_with_the_code_reply_and_a_hint(sender: Verifier, servers: dict) -> None:
    tenant = await sender.tenant()
    inbox_id = await active_inbox(sender, tenant, servers, "sender1@example.test")
    servers["smtp"].data_replies.append("554 5.7.1 Message rejected as spam")
    queued = await send(tenant, inbox_id, to=["rita@example.test"], subject="Deal", text="Buy")
    failed = await final(tenant, queued["id"])
    assert failed["state"] == "FAILED", failed
    assert failed["lastCode"] == 554 and "rejected as spam" in failed["lastReply"]
    assert failed["lastHint"]
    assert failed["attempts"] == 1
    assert delivered(servers["smtp"], queued["messageId"]) == []
    # Over the size the server announces (SIZE): refused before DATA, not retried either.
    small = await active_inbox(sender, tenant, servers, "sender6@example.test", smtp="small")
    big = await send(tenant, small, to=["rita@example.test"], subject="Big", text="x" * 2000)
    refused = await final(tenant, big["id"])
    assert refused["state"] == "FAILED" and refused["attempts"] == 1, refused
    assert refused["lastHint"]


async def test_a_4xx_is_retried_then_sent_once(sender: Verifier, servers: dict) -> None:
    tenant = await sender.tenant()
    inbox_id = await active_inbox(sender, tenant, servers, "sender2@example.test")
    servers["smtp"].data_replies.append("451 4.3.0 Try again later")
    queued = await send(tenant, inbox_id, to=["rita@example.test"], subject="Retry", text="x")
    sent = await final(tenant, queued["id"])
    assert sent["state"] == "SENT", sent
    assert sent["attempts"] == 2
    assert len(delivered(servers["smtp"], queued["messageId"])) == 1


async def imap_client(servers: dict, certs: MailCerts, user: str) -> aioimaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", servers["imap"].port, ssl_context=context)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    return client


async def expire_lease(sender: Verifier, outgoing_id: str, *, in_data: bool = False) -> None:
    """What a worker that died mid-send leaves: SENDING under a lease that has run out;
    ``in_data``: it had committed its write-ahead mark and begun DATA."""
    async with sender.db.connection() as connection:
        await connection.execute(
            "UPDATE outgoing_message SET state = 'SENDING', lease_owner = 'dead:1', attempts = 1,"
            " lease_expires_at = now() - interval '1 second',"
            " data_started_at = CASE WHEN $2 THEN now() END WHERE id = $1",
            uuid.UUID(outgoing_id),
            in_data,
        )
        await connection.execute(f"NOTIFY {JOBS_CHANNEL}")


async def file_in_sent(servers: dict, certs: MailCerts, user: str, message_id: str) -> None:
    """A copy in the Sent folder, as the provider (or inboxd before it died) filed it."""
    client = await imap_client(servers, certs, user)
    await client.create("Sent")  # NO when it exists: either way it is there
    copy = (
        f"From: {user}\r\nTo: rita@example.test\r\nSubject: A\r\n"
        f"Message-ID: {message_id}\r\n\r\na\r\n"
    ).encode()
    assert (await client.append(copy, mailbox="Sent")).result == "OK"
    await client.logout()


async def test_a_worker_that_died_in_data_is_never_sent_again(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    """The write-ahead mark: a message whose worker died after it began DATA may be on the
    server. Found in Sent it is SENT; not found it is FAILED saying so; never sent twice.
    One whose worker died before the mark is simply sent."""
    tenant = await sender.tenant()
    user = "sender12@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    filed, unfiled, unmarked = [
        await send(tenant, inbox_id, to=["rita@example.test"], subject=s, text=s, sendAt=later)
        for s in ("filed", "unfiled", "unmarked")
    ]
    await file_in_sent(servers, certs, user, filed["messageId"])
    before = len(servers["smtp"].messages)
    await expire_lease(sender, filed["id"], in_data=True)
    await expire_lease(sender, unfiled["id"], in_data=True)
    await expire_lease(sender, unmarked["id"])
    found, unknown, resent = [await final(tenant, m["id"]) for m in (filed, unfiled, unmarked)]
    assert found["state"] == "SENT" and "Sent folder" in found["lastReply"]
    assert unknown["state"] == "FAILED"
    assert (
        "may have accepted" in unknown["lastReply"] and "not send it again" in unknown["lastReply"]
    )
    assert "send it again" in unknown["lastHint"]
    assert resent["state"] == "SENT" and resent["lastCode"] == 250
    assert delivered(servers["smtp"], filed["messageId"]) == []
    assert delivered(servers["smtp"], unfiled["messageId"]) == []
    assert len(delivered(servers["smtp"], unmarked["messageId"])) == 1
    assert len(servers["smtp"].messages) == before + 1


async def test_a_reply_lost_after_data_is_not_answered_by_sending_again(
    sender: Verifier, servers: dict
) -> None:
    """RFC 1047: the server stored the message and the connection dropped before its 250.
    The outcome is unknown, so the worker checks the Sent folder instead of sending again."""
    tenant = await sender.tenant()
    inbox_id = await active_inbox(sender, tenant, servers, "sender13@example.test")
    servers["smtp"].vanish_after_data = 1
    queued = await send(tenant, inbox_id, to=["rita@example.test"], subject="Lost", text="x")
    row = await final(tenant, queued["id"])
    assert row["state"] == "FAILED" and "may have accepted" in row["lastReply"], row
    assert len(delivered(servers["smtp"], queued["messageId"])) == 1


async def test_an_interrupted_send_found_in_sent_is_not_sent_again(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    user = "sender3@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    found = await send(
        tenant, inbox_id, to=["rita@example.test"], subject="A", text="a", sendAt=later
    )
    lost = await send(
        tenant, inbox_id, to=["rita@example.test"], subject="B", text="b", sendAt=later
    )
    # The first was accepted before its worker died: its copy is in the Sent folder.
    client = await imap_client(servers, certs, user)
    await client.create("Sent")
    copy = (
        f"From: {user}\r\nTo: rita@example.test\r\nSubject: A\r\n"
        f"Message-ID: {found['messageId']}\r\n\r\na\r\n"
    ).encode()
    assert (await client.append(copy, mailbox="Sent")).result == "OK"
    await client.logout()
    before = len(servers["smtp"].messages)
    await expire_lease(sender, found["id"])
    await expire_lease(sender, lost["id"])
    recovered = await final(tenant, found["id"])
    resent = await final(tenant, lost["id"])
    assert recovered["state"] == "SENT" and "Sent folder" in recovered["lastReply"]
    assert delivered(servers["smtp"], found["messageId"]) == []
    assert resent["state"] == "SENT" and resent["lastCode"] == 250
    assert len(delivered(servers["smtp"], lost["messageId"])) == 1
    assert len(servers["smtp"].messages) == before + 1

    # The one sent now is filed in the Sent folder, so that it too is found if need be.
    async def filed() -> bool:
        row = (await tenant.client(GET, {"id": lost["id"]})).data["outgoingMessage"]
        return row["sentFolder"] == "Sent"

    await wait_until(filed, "the sent copy filed")
    client = await imap_client(servers, certs, user)
    await client.select("Sent")
    search = await client.search(f'HEADER Message-ID "{lost["messageId"]}"')
    await client.logout()
    numbers = search.lines[0].split()  # "* SEARCH 2" as aioimaplib gives it: [b"2"]
    assert search.result == "OK" and numbers and all(n.isdigit() for n in numbers), search.lines


async def test_a_reply_threads_under_the_received_message(sender: Verifier, servers: dict) -> None:
    tenant = await sender.tenant()
    inbox_id = await active_inbox(sender, tenant, servers, "sender4@example.test")
    original_id = uuid.uuid4()
    async with sender.db.connection() as connection:  # as the receiver stores a message
        await connection.execute(
            """INSERT INTO message (id, workspace_id, inbox_id, folder, uidvalidity, uid,
                 message_id, in_reply_to, reference_ids, subject, to_addresses, cc_addresses,
                 reply_to_addresses, attachments, size, received_at, seen, flagged, thread_id)
               VALUES ($1, $2, $3, 'INBOX', 1, 1, '<question@customer.test>',
                 '<root@customer.test>', ARRAY['<root@customer.test>'], 'Pricing?',
                 '[]', '[]', '[]', '[]', 10, now(), false, false, $1)""",
            original_id,
            tenant.workspace.id,
            uuid.UUID(inbox_id),
        )
    queued = await send(
        tenant, inbox_id, to=["customer@customer.test"], text="Here.",
        replyToMessageId=str(original_id),
    )  # fmt: skip
    assert queued["subject"] == "Re: Pricing?"
    assert queued["inReplyTo"] == "<question@customer.test>"
    assert queued["references"] == ["<root@customer.test>", "<question@customer.test>"]
    assert (await final(tenant, queued["id"]))["state"] == "SENT"
    [received] = delivered(servers["smtp"], queued["messageId"])
    parsed = message_from_bytes(received.data, policy=policy.default)
    assert parsed["In-Reply-To"] == "<question@customer.test>"
    assert parsed["References"].split() == ["<root@customer.test>", "<question@customer.test>"]
    assert parsed["Subject"] == "Re: Pricing?"
    stranger = await sender.tenant()
    elsewhere = await active_inbox(sender, stranger, servers, "sender5@example.test")
    refused = (
        await stranger.client(
            SEND,
            {"inboxId": elsewhere, "input": {"to": ["a@customer.test"], "text": "x",
                                             "replyToMessageId": str(original_id)}},
        )
    ).data["sendEmail"]  # fmt: skip
    assert refused["__typename"] == "ValidationError"
    assert [f["field"] for f in refused["fields"]] == ["replyToMessageId"]


async def test_a_1_mib_attachment_arrives_byte_for_byte(sender: Verifier, servers: dict) -> None:
    tenant = await sender.tenant()
    inbox_id = await active_inbox(sender, tenant, servers, "sender7@example.test")
    content = os.urandom(1024 * 1024)  # over the common request limit once base64'd
    queued = await send(
        tenant, inbox_id, to=["rita@example.test"], subject="The file", text="Attached.",
        attachments=[{"filename": "data.bin", "contentType": "application/octet-stream",
                      "contentBase64": base64.b64encode(content).decode()}],
    )  # fmt: skip
    assert (await final(tenant, queued["id"]))["state"] == "SENT"
    [received] = delivered(servers["smtp"], queued["messageId"])
    parsed = message_from_bytes(received.data, policy=policy.default)
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "data.bin"
    assert part.get_content() == content


async def settled(sender: Verifier, tenant: Any, outgoing_id: str) -> dict:
    """The message once its worker is done with it (SENT, and its copy filed or not)."""
    await final(tenant, outgoing_id)
    outbox = sender.stack.background.outbox
    assert outbox is not None
    done = uuid.UUID(outgoing_id)
    await wait_until(
        lambda: done not in outbox.running and done not in outbox.sender.copying,
        "the send and its Sent copy finished",
    )
    return (await tenant.client(GET, {"id": outgoing_id})).data["outgoingMessage"]


async def in_sent(servers: dict, certs: MailCerts, user: str, message_id: str) -> bool:
    client = await imap_client(servers, certs, user)
    await client.select("Sent")
    search = await client.search(f'HEADER Message-ID "{message_id}"')
    await client.logout()
    assert search.result == "OK", search.lines
    return bool(search.lines[0].split())


SET_SENDING = """mutation($id: ID!, $input: UpdateEmailInboxInput!) { updateEmailInbox(id: $id,
  input: $input) { ... on UpdateEmailInboxSuccess { inbox { sending { copyToSentFolder } } } } }"""


async def test_the_sent_folder_copy_follows_the_inbox_setting(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    for user in ("sender8@example.test", "sender9@example.test"):
        client = await imap_client(servers, certs, user)  # a Sent folder to file copies in
        assert (await client.create("Sent")).result == "OK"
        await client.logout()
    # Forced off: a server that would take a copy gets none.
    off = await active_inbox(
        sender, tenant, servers, "sender8@example.test", sending={"copyToSentFolder": False}
    )
    kept = await settled(sender, tenant, (await send(tenant, off, to=["r@example.test"],
                                                     subject="Off", text="x"))["id"])  # fmt: skip
    assert kept["state"] == "SENT" and kept["sentFolder"] is None
    assert not await in_sent(servers, certs, "sender8@example.test", kept["messageId"])
    # Forced on for a provider that files sent mail itself (Gmail, here on loopback).
    on = await active_inbox(
        sender, tenant, servers, "sender9@example.test", provider="GMAIL",
        sending={"copyToSentFolder": True},
    )  # fmt: skip
    filed = await settled(sender, tenant, (await send(tenant, on, to=["r@example.test"],
                                                      subject="On", text="x"))["id"])  # fmt: skip
    assert filed["sentFolder"] == "Sent"
    assert await in_sent(servers, certs, "sender9@example.test", filed["messageId"])
    # null: the provider's rule again (Gmail files it itself: no copy from inboxd).
    reset = await tenant.client(SET_SENDING, {"id": on, "input": {"sending": {
        "copyToSentFolder": None}}})  # fmt: skip
    assert reset.data["updateEmailInbox"]["inbox"]["sending"] == {"copyToSentFolder": None}
    ruled = await settled(sender, tenant, (await send(tenant, on, to=["r@example.test"],
                                                      subject="Rule", text="x"))["id"])  # fmt: skip
    assert ruled["sentFolder"] is None
    assert not await in_sent(servers, certs, "sender9@example.test", ruled["messageId"])


async def copies_in_sent(servers: dict, certs: MailCerts, user: str, message_id: str) -> int:
    client = await imap_client(servers, certs, user)
    await client.select("Sent")
    search = await client.search(f'HEADER Message-ID "{message_id}"')
    await client.logout()
    assert search.result == "OK", search.lines
    return len(search.lines[0].split())


async def copy_comes_due(sender: Verifier, outgoing_id: str, *, forget_folder: bool) -> None:
    """What a worker that died between recording SENT and filing the copy leaves, once the
    time it had to file it has passed."""
    async with sender.db.connection() as connection:
        await connection.execute(
            "UPDATE outgoing_message SET copy_due_at = now(),"
            " sent_folder = CASE WHEN $2 THEN NULL ELSE sent_folder END WHERE id = $1",
            uuid.UUID(outgoing_id),
            forget_folder,
        )
        await connection.execute(f"NOTIFY {JOBS_CHANNEL}")


async def test_a_sent_copy_its_worker_could_not_file_is_filed_later_once(
    sender: Verifier, servers: dict, certs: MailCerts
) -> None:
    tenant = await sender.tenant()
    user = "sender10@example.test"
    inbox_id = await active_inbox(sender, tenant, servers, user)
    # No Sent folder yet: the worker sends it and cannot file the copy.
    sent = await settled(
        sender, tenant, (await send(tenant, inbox_id, to=["r@example.test"], subject="Late",
                                    text="x"))["id"],
    )  # fmt: skip
    assert sent["state"] == "SENT" and sent["sentFolder"] is None
    client = await imap_client(servers, certs, user)
    assert (await client.create("Sent")).result == "OK"
    await client.logout()
    await copy_comes_due(sender, sent["id"], forget_folder=False)

    async def filed() -> bool:
        row = (await tenant.client(GET, {"id": sent["id"]})).data["outgoingMessage"]
        return row["sentFolder"] == "Sent"

    await wait_until(filed, "the late copy filed")
    assert await copies_in_sent(servers, certs, user, sent["messageId"]) == 1
    # Filed by a worker that died before it could say so: found there, not filed twice.
    await copy_comes_due(sender, sent["id"], forget_folder=True)
    await wait_until(filed, "the late copy found")
    async with sender.db.connection() as connection:
        due = await connection.fetchval(
            "SELECT copy_due_at FROM outgoing_message WHERE id = $1", uuid.UUID(sent["id"])
        )
    assert due is None
    assert await copies_in_sent(servers, certs, user, sent["messageId"]) == 1
    assert len(delivered(servers["smtp"], sent["messageId"])) == 1
