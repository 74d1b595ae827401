"""Mail in the console, in a real browser against a real inboxd receiving from pymap and
sending through aiosmtpd: received messages arriving live, in pages and by filter; a message's
page with its text, its sanitised HTML in a sandboxed frame that runs nothing and loads
nothing, and its attachments; compose (a double click sends once), each refusal at its place,
replying, and the outbox following each message's state and cancelling a queued one."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import pytest

from tests.browser.conftest import PASSWORD, Browser
from tests.browser.test_console import create, serious
from tests.conftest import DnsTestServer, KeyRing, Tenant, Verifier, verifier_on
from tests.support.mailservers import MailCerts
from tests.support.waiting import subscribed, wait_until

WATCHED = """query($id: ID!) { emailInbox(id: $id) { status receiving { state } } }"""
MESSAGES = """query($id: ID!) { messages(inboxId: $id, first: 50) {
  edges { node { id subject } } } }"""
OUTBOX = """query($id: ID!) { outgoingMessages(inboxId: $id, first: 50) {
  edges { node { id subject state inReplyTo } } } }"""
SEND = """mutation($id: ID!, $input: SendEmailInput!) { sendEmail(inboxId: $id, input: $input) {
  __typename ... on SendEmailSuccess { outgoingMessage { id } } } }"""
# Inbox page subscriptions: the header's usage, the inbox's status, messageReceived, the outbox.
PAGE_SUBSCRIPTIONS = 4


@pytest.fixture(scope="module")
async def verifier(
    pg_server: tuple[str, Path | None],
    certs: MailCerts,
    keyring: KeyRing,
    dns_server: DnsTestServer,
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0], certs, keyring, dns=dns_server, receiving_enabled=True
    ) as running:
        yield running


async def watched(tenant: Tenant, inbox_id: str) -> None:
    async def ready() -> bool:
        inbox = (await tenant.client(WATCHED, {"id": inbox_id})).data["emailInbox"]
        assert inbox["status"] != "FAILED", inbox
        return inbox["status"] == "ACTIVE" and inbox["receiving"]["state"] in ("IDLE", "POLLING")

    await wait_until(ready, f"inbox {inbox_id} watched")


async def append(mail: dict[str, Any], certs: MailCerts, user: str, message: EmailMessage) -> None:
    """Deliver as a mail client would: an APPEND from a session of its own."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    client = aioimaplib.IMAP4_SSL("127.0.0.1", mail["imap"].port, ssl_context=context)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    assert (await client.append(message.as_bytes(), mailbox="INBOX")).result == "OK"
    await client.logout()


def message(subject: str, to: str, text: str, **parts: Any) -> EmailMessage:
    made = EmailMessage()
    made["From"] = "Friend <friend@console.test>"
    made["To"] = to
    made["Subject"] = subject
    made["Message-ID"] = email.utils.make_msgid(domain="console.test")
    made.set_content(text)
    if "html" in parts:
        made.add_alternative(parts["html"], subtype="html")
    for name, data in parts.get("files", {}).items():
        made.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return made


async def inbox_page(
    browser: Browser, verifier: Verifier, tenant: Tenant, inbox_id: str, query: str = ""
) -> None:
    """Signs in straight onto the inbox's page (no other page subscribed before it)."""
    route = f"#/inboxes/{inbox_id}{query}"
    await browser("open", url=f"{verifier.stack.base_url}/console/{route}")
    await browser("fill", selector="#api-key", value=tenant.key)
    await browser("press", selector="#api-key", key="Enter")
    await browser("waitText", selector="#workspace", text=tenant.workspace.name)
    await browser("waitText", selector="h1", text="ACTIVE")
    await subscribed(verifier.stack.state.hub, tenant.workspace.id, count=PAGE_SUBSCRIPTIONS)


async def test_received_mail_arrives_live_in_pages_and_opens_sanitised(
    browser, verifier, mail, certs, shots
):
    tenant = await verifier.tenant()
    user = "reader@console.test"
    inbox_id = await create(tenant, user, mail, name="Reader")
    await watched(tenant, inbox_id)
    # A listener a remote image would reach: the frame must never ask it for anything.
    asked: list[bytes] = []

    async def remote(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.read(100))
        writer.close()

    tracker = await asyncio.start_server(remote, "127.0.0.1", 0)
    tracker_port = tracker.sockets[0].getsockname()[1]
    try:
        await inbox_page(browser, verifier, tenant, inbox_id, "?messages=2")
        await browser("waitText", selector=".message-list", text="No message received yet")
        await browser("mark", value="no reload")
        await append(mail, certs, user, message("First hello", user, "one"))
        await browser("waitText", selector=".message-list tbody tr", text="First hello")
        await append(mail, certs, user, message("Second hello", user, "two"))
        await browser("waitText", selector=".message-list tbody tr", text="Second hello")
        html = (
            "<p>Hello <b>there</b></p><script>window.__ran = 'script'</script>"
            f'<img src="http://127.0.0.1:{tracker_port}/pixel.png" alt="pixel">'
            "<a href=\"javascript:window.__ran='link'\">click</a>"
        )
        rich = message(
            "Third hello", user, "plain words", html=html, files={"notes.txt": b"attached bytes"}
        )
        await append(mail, certs, user, rich)
        await browser("waitText", selector=".message-list tbody tr", text="Third hello")
        live = await browser("waitText", selector=".messages .note", text="Third hello")
        assert "friend@console.test" in live["text"]
        # Pages of 2, newest first.
        rows = (await browser("texts", selector=".message-list tbody tr"))["texts"]
        assert ["Third" in rows[0], "Second" in rows[1], len(rows)] == [True, True, 2], rows
        await browser("click", selector="text=Older messages")
        await browser("waitText", selector=".message-list tbody tr", text="First hello")
        assert (await browser("count", selector=".message-list tbody tr"))["count"] == 1
        await browser("click", selector="text=Newer messages")
        await browser("waitText", selector=".message-list tbody tr", text="Third hello")
        await browser("fill", selector="#m-subject", value="Second")
        await browser("click", selector='form[aria-label="Filter messages"] button')

        async def filtered() -> bool:
            rows = (await browser("texts", selector=".message-list tbody tr"))["texts"]
            return len(rows) == 1 and "Second hello" in rows[0]

        await wait_until(filtered, "only the second message listed")
        assert (await browser("state"))["mark"] == "no reload"
        await browser("screenshot", path=str(shots / "messages.png"))
        assert await serious(browser) == []

        stored = (await tenant.client(MESSAGES, {"id": inbox_id})).data["messages"]["edges"]
        third = next(e["node"]["id"] for e in stored if e["node"]["subject"] == "Third hello")
        await browser("goto", hash=f"#/inboxes/{inbox_id}/messages/{third}")
        await browser("waitText", selector="h1", text="Third hello")
        await browser("waitText", selector=".text-body", text="plain words")
        shown = await browser("frame", selector="iframe.html-body")
        assert shown["sandbox"] == ""  # no allow-scripts, no allow-same-origin
        assert "default-src 'none'" in shown["srcdoc"] and "<script" not in shown["srcdoc"]
        assert "javascript:" not in shown["srcdoc"]
        assert "Hello there" in shown["text"] and shown["ran"] is None
        assert asked == []  # the frame's policy blocked the remote image
        link = await browser("attribute", selector=".attachments a", name="href")
        assert link["value"].startswith("/attachments/")
        fetched = await browser("fetch", url=link["value"])
        assert fetched["status"] == 200 and fetched["text"] == "attached bytes"
        assert "notes.txt" in fetched["disposition"]
        await browser("screenshot", path=str(shots / "message.png"))
        assert await serious(browser) == []
        # Reply opens the inbox's compose form addressed to the sender.
        await browser("click", selector='a.button:text-is("Reply")')
        await browser("waitValue", selector="#c-to", value="Friend <friend@console.test>")
        await browser("waitText", selector=".reply-note", text="Third hello")
        # The message and the inbox's page (messages, compose, outbox) at phone width.
        for route, heading in ((f"/messages/{third}", "Third hello"), ("", "ACTIVE")):
            url = f"{verifier.stack.base_url}/console/#/inboxes/{inbox_id}{route}"
            await browser("open", url=url, width=390, height=844)
            await browser("fill", selector="#api-key", value=tenant.key)
            await browser("press", selector="#api-key", key="Enter")
            await browser("waitText", selector="h1", text=heading)
            state = await browser("state")
            assert state["scrollWidth"] <= state["width"], f"{route or 'inbox'} scrolls sideways"
    finally:
        tracker.close()
        await tracker.wait_closed()


async def test_compose_sends_once_refuses_at_the_field_replies_and_cancels(
    browser, verifier, mail, certs, shots
):
    tenant = await verifier.tenant()
    user = "send@console.test"
    inbox_id = await create(tenant, user, mail, name="Sender", displayName="Console Sender")
    await watched(tenant, inbox_id)
    await inbox_page(browser, verifier, tenant, inbox_id)
    await browser("mark", value="no reload")
    # A ValidationError lands at the field it names.
    await browser("fill", selector="#c-to", value="not an address")
    await browser("fill", selector="#c-subject", value="Hello once")
    await browser("fill", selector="#c-text", value="Sent from the console.")
    await browser("click", selector="form.compose button[type=submit]")
    refused = await browser("waitText", selector="#c-to-error", text="to[0]")
    assert refused["text"]
    assert (await browser("state"))["focused"] == "to"
    # Fixed, with an attachment, then double-clicked: one message.
    await browser("fill", selector="#c-to", value="friend@console.test")
    attached = base64.b64encode(b"report body").decode()
    file = {"name": "report.txt", "mimeType": "text/plain", "base64": attached}
    await browser("upload", selector="#c-attachments", **file)
    before = len(mail["smtp"].messages)
    await browser("dblclick", selector="form.compose button[type=submit]")
    await browser("waitText", selector="tr[data-outgoing] .state", text="SENT")
    await browser("waitText", selector="form.compose .note", text="Queued: Hello once")
    outbox = (await tenant.client(OUTBOX, {"id": inbox_id})).data["outgoingMessages"]["edges"]
    assert [e["node"]["subject"] for e in outbox] == ["Hello once"]  # queued once
    arrived = [m for m in mail["smtp"].messages[before:] if b"Hello once" in m.data]
    assert len(arrived) == 1 and arrived[0].rcpt_tos == ["friend@console.test"]
    parsed = email.message_from_bytes(arrived[0].data, policy=email.policy.default)
    files = {part.get_filename(): part.get_content() for part in parsed.iter_attachments()}
    assert files == {"report.txt": "report body"}
    assert (await browser("count", selector="#c-to-error p"))["count"] == 0
    await browser("screenshot", path=str(shots / "compose.png"))
    assert await serious(browser) == []

    # A reply to a received message, its subject left blank: threaded, "Re:".
    await append(mail, certs, user, message("Question", user, "Can you answer?"))

    async def received() -> str | None:
        edges = (await tenant.client(MESSAGES, {"id": inbox_id})).data["messages"]["edges"]
        return next((e["node"]["id"] for e in edges if e["node"]["subject"] == "Question"), None)

    question = await wait_until(received, "the question received")
    await browser("goto", hash=f"#/inboxes/{inbox_id}?reply={question}")
    await browser("waitValue", selector="#c-to", value="Friend <friend@console.test>")
    await browser("fill", selector="#c-text", value="Here is the answer.")
    await browser("click", selector="form.compose button[type=submit]")
    await browser("waitText", selector="tr[data-outgoing]", text="Re: Question")
    reply_row = "tr[data-outgoing]:has-text('Re: Question')"
    await browser("waitText", selector=f"{reply_row} .state", text="SENT")
    outbox = (await tenant.client(OUTBOX, {"id": inbox_id})).data["outgoingMessages"]["edges"]
    assert outbox[0]["node"]["inReplyTo"] is not None

    # A message queued for tomorrow (through the API) joins the outbox live and is cancelled.
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    tomorrow = {"to": ["friend@console.test"], "subject": "Later", "text": "x", "sendAt": later}
    queued = await tenant.client(SEND, {"id": inbox_id, "input": tomorrow})
    later_id = queued.data["sendEmail"]["outgoingMessage"]["id"]
    row = f'tr[data-outgoing="{later_id}"]'
    await browser("waitText", selector=f"{row} .state", text="QUEUED")
    await browser("click", selector=f"{row} button.cancel")
    await browser("waitText", selector=f"{row} .state", text="CANCELLED")
    assert (await browser("count", selector=f"{row} button.cancel"))["count"] == 0
    state = await browser("state")
    assert state["mark"] == "no reload" and state["problems"] == []
    await browser("screenshot", path=str(shots / "outbox.png"))


async def test_compose_shows_the_daily_limit_and_an_inactive_inbox(browser, verifier, mail):
    tenant = await verifier.tenant()
    limited = await create(tenant, "limit@console.test", mail, dailySendLimit=1)
    await watched(tenant, limited)
    first = await tenant.client(
        SEND, {"id": limited, "input": {"to": ["friend@console.test"], "subject": "1", "text": "1"}}
    )
    assert first.data["sendEmail"]["__typename"] == "SendEmailSuccess"
    await inbox_page(browser, verifier, tenant, limited)
    await browser("fill", selector="#c-to", value="friend@console.test")
    await browser("fill", selector="#c-subject", value="Over the limit")
    await browser("fill", selector="#c-text", value="2")
    await browser("click", selector="form.compose button[type=submit]")
    shown = await browser("waitText", selector="form.compose .summary", text="limit 1 a day")
    assert "Change the daily send limit" in shown["text"]
    off = await create(tenant, "off@console.test", mail)
    await watched(tenant, off)
    switched = await tenant.client(
        "mutation($id: ID!) { updateEmailInbox(id: $id, input: {active: false}) { __typename } }",
        {"id": off},
    )
    assert switched.data["updateEmailInbox"]["__typename"] == "UpdateEmailInboxSuccess"
    await browser("goto", hash=f"#/inboxes/{off}")
    await browser("fill", selector="#c-to", value="friend@console.test")
    await browser("fill", selector="#c-subject", value="From a switched-off inbox")
    await browser("fill", selector="#c-text", value="3")
    await browser("click", selector="form.compose button[type=submit]")
    shown = await browser("waitText", selector="form.compose .summary", text="deactivated")
    assert "Open the inbox's settings" in shown["text"]
    outbox = (await tenant.client(OUTBOX, {"id": off})).data["outgoingMessages"]["edges"]
    assert outbox == []
