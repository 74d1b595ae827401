"""Attachments downloaded through their signed links, and threads: real pymap over real
sockets, a real inboxd stack with its receiver, the bytes fetched over real HTTP."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mail.parse import parse_message
from storage import folder_sync, messages
from storage.attachments import AttachmentLinks, LinkCheck, LinkTarget
from storage.db import create_database
from storage.secrets import KeyRing
from tests.conftest import Verifier, verifier_on
from tests.inboxd.test_receiving import PASSWORD, create_watched
from tests.storage.test_query_counts import measured
from tests.support.mailservers import MailCerts, tls_mail_servers
from tests.support.waiting import wait_until

USERS = {f"attach{n}@example.test": PASSWORD for n in range(4)}
MAX_ATTACHMENT = 100_000

MESSAGES = """
query($id: ID!, $filter: MessageFilter) {
  messages(inboxId: $id, first: 50, filter: $filter) {
    edges { node { id subject threadId messageId
      attachments { filename contentType size contentId downloadUrl notStoredReason } } }
  }
}"""
MESSAGE = """
query($id: ID!) { message(id: $id) { id threadId
  attachments { filename size downloadUrl notStoredReason } } }"""


@pytest.fixture(scope="module")
def servers(certs: MailCerts) -> Iterator[dict[str, Any]]:
    with tls_mail_servers(USERS, certs) as servers:
        yield servers


# The module's own key ring, so that a test can sign with the encryption key itself.
SPEC = KeyRing.generate_spec("attach1")
ENCRYPTION_KEY = base64.b64decode(SPEC.partition(":")[2])


@pytest.fixture(scope="module")
async def receiving(
    pg_server: tuple[str, Path | None], certs: MailCerts
) -> AsyncIterator[Verifier]:
    async with verifier_on(
        pg_server[0],
        certs,
        KeyRing.parse(SPEC),
        receiving_enabled=True,
        receiving_max_attachment_bytes=MAX_ATTACHMENT,
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def http(receiving: Verifier) -> AsyncIterator[httpx.AsyncClient]:
    # No API key: the signed link is the capability.
    async with httpx.AsyncClient(base_url=receiving.stack.base_url, timeout=30) as client:
        yield client


def letter(subject: str, *, message_id: str | None = None, headers: str = "") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Sender <sender@sender.test>"
    message["To"] = "someone@example.test"
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@sender.test>"
    for line in filter(None, headers.split("\n")):
        name, _, value = line.partition(": ")
        message[name] = value
    message.set_content(f"Hello, {subject}.")
    return message


async def stored(tenant: Any, inbox_id: str, count: int, **flt: Any) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        result = await tenant.client(MESSAGES, {"id": inbox_id, "filter": flt or None})
        nodes = [e["node"] for e in result.data["messages"]["edges"]]
        return nodes if len(nodes) >= count else None

    nodes: list[dict[str, Any]] = await wait_until(found, f"{count} messages stored")
    return nodes


RANDOM = os.urandom(40_000)
# A PDF's shape: CR, LF, CRLF, NUL, bytes above 127 and trailing spaces, all kept as they are.
PDF = b"%PDF-1.7\r\n%\xe2\xe3\xcf\xd3\n1 0 obj\r<< /Type /Catalog >>\nendobj \n\x00\xff" * 50
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2_000)
NON_ASCII = "R\u00e9sum\u00e9 \u2013 \u65e5\u672c.pdf"  # Résumé, an en dash, 日本
HOSTILE_NAME = 'evil\r\nSet-Cookie: stolen=1; "q".txt'


def with_everything() -> bytes:
    message = letter("everything")
    message.add_alternative("<p>logo: <img src='cid:logo@sender.test'></p>", subtype="html")
    html = message.get_payload()[1]
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@sender.test>")
    message.add_attachment(
        RANDOM, maintype="application", subtype="octet-stream", filename="random.bin"
    )
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename=NON_ASCII)
    message.add_attachment(
        b"text, exactly\r\n", maintype="text", subtype="plain", filename="hostile.txt"
    )
    message.add_attachment(os.urandom(MAX_ATTACHMENT + 1), maintype="application",
                           subtype="zip", filename="too-big.zip")  # fmt: skip
    # A name that decodes (RFC 2231) to CR, LF, quotes and ";": what the email package's own
    # writer refuses to produce, so a sender's hand-made header.
    encoded = b"filename*=utf-8''" + quote(HOSTILE_NAME, safe="").encode()
    return bytes(message).replace(b'filename="hostile.txt"', encoded)


async def test_attachments_download_as_exact_bytes_with_safe_headers(
    receiving: Verifier, servers: dict[str, Any], http: httpx.AsyncClient
) -> None:
    user = "attach0@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    servers["TLS"].deliver(user, with_everything())
    [node] = await stored(tenant, inbox_id, 1)
    by_name = {a["filename"]: a for a in node["attachments"]}
    assert [a["filename"] for a in node["attachments"]] == [
        None, "random.bin", NON_ASCII, HOSTILE_NAME, "too-big.zip"
    ]  # fmt: skip
    [inline] = [a for a in node["attachments"] if a["contentId"]]
    assert inline["contentId"] == "<logo@sender.test>" and inline["contentType"] == "image/png"
    expected = {None: PNG, "random.bin": RANDOM, NON_ASCII: PDF,
                HOSTILE_NAME: b"text, exactly\r\n"}  # fmt: skip
    for name, content in expected.items():
        attachment = by_name[name]
        assert attachment["size"] == len(content) and attachment["notStoredReason"] is None
        assert attachment["downloadUrl"].startswith(f"/attachments/{node['id']}/")
        got = await http.get(attachment["downloadUrl"])
        assert got.status_code == 200, got.text
        assert got.content == content
        assert got.headers["content-type"] == attachment["contentType"]
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["cache-control"] == "private, no-store"
        assert got.headers["content-disposition"].startswith("attachment; ")
    pdf = await http.get(by_name[NON_ASCII]["downloadUrl"])
    assert (
        "filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%80%93%20%E6%97%A5%E6%9C%AC.pdf"
        in (pdf.headers["content-disposition"])
    )
    hostile = await http.get(by_name[HOSTILE_NAME]["downloadUrl"])
    assert "set-cookie" not in hostile.headers
    assert hostile.headers["content-disposition"] == (
        'attachment; filename="evil__Set-Cookie_ stolen_1_ _q_.txt"; '
        "filename*=UTF-8''evil%0D%0ASet-Cookie%3A%20stolen%3D1%3B%20%22q%22.txt"
    )
    # Over INBOXD_RECEIVING_MAX_ATTACHMENT_BYTES: described, its bytes not kept.
    too_big = by_name["too-big.zip"]
    assert too_big["size"] == MAX_ATTACHMENT + 1
    assert too_big["downloadUrl"] is None
    assert str(MAX_ATTACHMENT) in too_big["notStoredReason"]
    async with receiving.db.connection() as connection:
        kept = await connection.fetch(
            "SELECT index, length(content) AS size FROM message_attachment "
            "WHERE message_id = $1 ORDER BY index",
            uuid.UUID(node["id"]),
        )
    assert [(r["index"], r["size"]) for r in kept] == [
        (0, len(PNG)), (1, len(RANDOM)), (2, len(PDF)), (3, 15)
    ]  # fmt: skip


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{'&'.join(f'{k}={v}' for k, v in query.items())}"


async def test_a_link_works_only_as_signed_and_until_it_expires(
    receiving: Verifier, servers: dict[str, Any], http: httpx.AsyncClient
) -> None:
    user = "attach1@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    for subject in ("first", "second"):
        message = letter(subject)
        message.add_attachment(f"{subject} a".encode(), maintype="application",
                               subtype="octet-stream", filename="a.bin")  # fmt: skip
        message.add_attachment(f"{subject} b".encode(), maintype="application",
                               subtype="octet-stream", filename="b.bin")  # fmt: skip
        servers["TLS"].deliver(user, bytes(message))
    nodes = {n["subject"]: n for n in await stored(tenant, inbox_id, 2)}
    first, second = nodes["first"], nodes["second"]
    url = first["attachments"][0]["downloadUrl"]
    assert (await http.get(url)).content == b"first a"

    async def refused(link: str, code: str) -> None:
        got = await http.get(link)
        assert got.status_code == 403, got.text
        assert got.json()["error"]["code"] == code
        assert b"first" not in got.content

    sig = parse_qs(urlsplit(url).query)["sig"][0]
    await refused(_with(url, sig=sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")), "BAD_LINK")
    await refused(_with(url, sig=""), "BAD_LINK")
    await refused(_with(url, expires="99999999999"), "BAD_LINK")  # a later expiry, same sig
    # The signature names one attachment: not the next index, not another message's.
    await refused(url.replace(f"/{first['id']}/0", f"/{first['id']}/1"), "BAD_LINK")
    await refused(url.replace(first["id"], second["id"]), "BAD_LINK")
    # Nor another workspace.
    await refused(_with(url, workspace=str(uuid.uuid4())), "BAD_LINK")

    # Signed with the encryption key itself: refused; with the key HKDF derives from it for
    # links only: served (the derivation is what the README says it is).
    def signed(key: bytes) -> str:
        payload = f"{first['id']}\n0\n{expires}\n{tenant.workspace.id}".encode()
        digest = hmac.new(key, payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    expires = parse_qs(urlsplit(url).query)["expires"][0]
    await refused(_with(url, sig=signed(ENCRYPTION_KEY)), "BAD_LINK")
    derived = HKDF(hashes.SHA256(), 32, salt=None, info=b"inboxd:attachment-links:v1")
    assert (
        await http.get(_with(url, sig=signed(derived.derive(ENCRYPTION_KEY))))
    ).status_code == 200
    # A link inboxd itself signed, expired since (signed as if at the epoch).
    links = receiving.stack.state.attachment_links
    assert links is not None
    target = LinkTarget(tenant.workspace.id, uuid.UUID(first["id"]), 0)
    await refused(links.url(target, now=0), "LINK_EXPIRED")
    # A valid link to a message that is gone.
    async with receiving.db.connection() as connection:
        await connection.execute("DELETE FROM message WHERE id = $1", uuid.UUID(first["id"]))
    gone = await http.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"
    # The key never shows, not even in the signer's repr.
    assert repr(links) == f"AttachmentLinks(lifetime_seconds={links.lifetime_seconds})"


async def test_a_reply_shares_its_parents_thread_and_a_new_conversation_starts_one(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    user = "attach2@example.test"
    tenant = await receiving.tenant()
    inbox_id = await create_watched(receiving, tenant, servers, user)
    root, reply = "<root@sender.test>", "<reply@sender.test>"
    deliveries = [
        letter("root", message_id=root),
        letter("reply", message_id=reply, headers=f"In-Reply-To: {root}\nReferences: {root}"),
        # References only, naming its parent last (and an unknown id before it).
        letter("reply to the reply", headers=f"References: <elsewhere@x.test> {root} {reply}"),
        letter("another conversation"),
        letter("orphan", headers="In-Reply-To: <later@sender.test>"),
        # The parent arriving after its reply: two threads (documented).
        letter("late parent", message_id="<later@sender.test>"),
    ]
    for message in deliveries:
        servers["TLS"].deliver(user, bytes(message))
    nodes = {n["subject"]: n for n in await stored(tenant, inbox_id, len(deliveries))}
    thread = nodes["root"]["threadId"]
    assert thread == nodes["root"]["id"]
    assert nodes["reply"]["threadId"] == thread
    assert nodes["reply to the reply"]["threadId"] == thread
    assert nodes["another conversation"]["threadId"] == nodes["another conversation"]["id"]
    assert nodes["orphan"]["threadId"] != nodes["late parent"]["threadId"]
    in_thread = await tenant.client(MESSAGES, {"id": inbox_id, "filter": {"threadId": thread}})
    subjects = sorted(e["node"]["subject"] for e in in_thread.data["messages"]["edges"])
    assert subjects == ["reply", "reply to the reply", "root"]
    nothing = await tenant.client(MESSAGES, {"id": inbox_id, "filter": {"threadId": "nope"}})
    assert nothing.data["messages"]["edges"] == []


def _attached(count: int) -> bytes:
    message = letter(f"{count} attachments")
    for n in range(count):
        message.add_attachment(os.urandom(1_000), maintype="application",
                               subtype="octet-stream", filename=f"{n}.bin")  # fmt: skip
    return bytes(message)


async def test_storing_a_message_costs_one_statement_with_or_without_attachments(
    receiving: Verifier, servers: dict[str, Any]
) -> None:
    # B7: store + attachments + thread + folder progress + notification, one statement.
    user = "attach3@example.test"
    tenant = await receiving.tenant()
    inbox_id = uuid.UUID(await create_watched(receiving, tenant, servers, user))
    receiver = receiving.stack.background.receiver
    assert receiver is not None
    async with receiving.db.connection() as connection:
        folder = await folder_sync.folder_state(connection, inbox_id, "INBOX")
    assert folder is not None
    uids = iter(range(1_000_000, 1_000_100))
    # A database of its own, so the receiver's own work is not counted.
    settings = receiving.stack.settings
    assert settings.database_url
    db = create_database(settings.database_url, pool_size=2)

    def storing(count: int) -> Any:
        async def store() -> None:
            raw = _attached(count)
            parsed = parse_message(raw, max_attachment_bytes=MAX_ATTACHMENT)
            assert len(parsed.attachments) == count
            new = messages.NewMessage(
                folder="INBOX", uidvalidity=folder.uidvalidity, uid=next(uids), size=len(raw),
                **dataclasses.asdict(parsed),
            )  # fmt: skip
            async with db.connection() as connection:
                assert await messages.store_message(connection, inbox_id, receiver.owner, new)

        return store

    try:
        none = await measured(db, storing(0))
        three = await measured(db, storing(3))
    finally:
        await db.dispose()
    assert len(none.statements) == 1, none.listing()
    assert none.round_trips == 1, none.control
    assert three.summary() == none.summary()
    async with receiving.db.connection() as connection:
        kept = await connection.fetchval(
            "SELECT count(*) FROM message_attachment a JOIN message m ON m.id = a.message_id "
            "WHERE m.inbox_id = $1",
            inbox_id,
        )
    assert kept == 6  # three attachments in each of the two messages with three


def test_a_link_signed_before_a_key_rotation_still_verifies() -> None:
    old = KeyRing.parse(SPEC)
    rotated = KeyRing.parse(f"{SPEC},{KeyRing.generate_spec('attach2')}")
    target = LinkTarget(uuid.uuid4(), uuid.uuid4(), 2)
    url = AttachmentLinks(old, 300).url(target, now=1_000)
    query = parse_qs(urlsplit(url).query)
    expires, sig = int(query["expires"][0]), query["sig"][0]
    assert expires == 1_300
    assert AttachmentLinks(rotated, 300).check(target, expires, sig, now=1_299) is LinkCheck.VALID
    assert AttachmentLinks(rotated, 300).check(target, expires, sig, now=1_301) is (
        LinkCheck.EXPIRED
    )
    other = KeyRing.parse(KeyRing.generate_spec("elsewhere"))
    assert AttachmentLinks(other, 300).check(target, expires, sig, now=1_000) is (
        LinkCheck.BAD_SIGNATURE
    )
