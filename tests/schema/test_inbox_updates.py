"""What a partial update promises: a stored password stays, never reaches a new host, and any
connection change sends the inbox back to PENDING with a verification queued."""

from __future__ import annotations

import uuid

import pytest

from storage import inboxes
from storage.jobs import OPEN_TEST_SQL
from storage.rows import TestRow
from tests.schema.fragments import CREATE, GET, UPDATE

STORED = {"smtp": "stored-smtp-secret", "imap": "stored-imap-secret"}


def two_password_input(email: str) -> dict[str, object]:
    return {
        "email": email,
        "smtp": {"host": "smtp.example.com", "port": 587, "password": STORED["smtp"]},
        "imap": {"host": "imap.example.com", "port": 993, "password": STORED["imap"]},
    }


async def create(tenant, email: str) -> dict[str, object]:
    response = await tenant.client(CREATE, {"input": two_password_input(email)})
    payload = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return payload["inbox"]


async def update(tenant, inbox_id: str, changes: dict[str, object]) -> dict[str, object]:
    response = await tenant.client(UPDATE, {"id": inbox_id, "input": changes})
    return response.data["updateEmailInbox"]


async def stored_password(db, keyring, tenant, inbox_id: str, side: str) -> str:
    async with db.connection() as connection:
        row = await inboxes.get_inbox(connection, tenant.workspace.id, uuid.UUID(inbox_id))
    return inboxes.decrypt_password(keyring, row, f"{side}_password").reveal()


async def mark_verified(db, inbox_id: str) -> None:
    """What a worker leaves behind after a passing verification: the inbox ACTIVE and no open
    test. The stack these tests use has no worker (their hosts must never be contacted)."""
    async with db.connection() as connection, connection.transaction():
        await connection.execute(
            "UPDATE email_inbox SET status = 'ACTIVE' WHERE id = $1", uuid.UUID(inbox_id)
        )
        await connection.execute(
            "UPDATE connection_test SET state = 'PASSED' WHERE inbox_id = $1"
            " AND state IN ('QUEUED', 'RUNNING')",
            uuid.UUID(inbox_id),
        )


async def open_tests(db, inbox_id: str) -> list[TestRow]:
    async with db.connection() as connection:
        return await connection.fetch(OPEN_TEST_SQL, uuid.UUID(inbox_id), record_class=TestRow)


@pytest.mark.parametrize("side", ["smtp", "imap"])
@pytest.mark.parametrize("password", [None, ""], ids=["omitted", "blank"])
async def test_changing_a_host_requires_the_password(tenant, db, keyring, side, password):
    inbox = await create(tenant, f"host-{side}-{password is None}@example.com")
    change: dict[str, object] = {"host": "attacker.example.net"}
    if password is not None:
        change["password"] = password
    refused = await update(tenant, inbox["id"], {side: change})
    assert refused["__typename"] == "ValidationError", refused
    assert [f["field"] for f in refused["fields"]] == [f"{side}.password"]
    read = (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert read[side]["host"] == f"{side}.example.com"
    assert read["version"] == inbox["version"]

    accepted = await update(
        tenant, inbox["id"], {side: {"host": "mail.other.example", "password": "new-one"}}
    )
    assert accepted["__typename"] == "UpdateEmailInboxSuccess", accepted
    assert accepted["inbox"][side]["host"] == "mail.other.example"
    assert await stored_password(db, keyring, tenant, inbox["id"], side) == "new-one"


async def test_same_host_again_needs_no_password(tenant):
    inbox = await create(tenant, "samehost@example.com")
    result = await update(tenant, inbox["id"], {"imap": {"host": "IMAP.example.com."}})
    assert result["__typename"] == "UpdateEmailInboxSuccess", result
    assert result["inbox"]["version"] == inbox["version"]  # nothing changed


@pytest.mark.parametrize("side", ["smtp", "imap"])
@pytest.mark.parametrize(
    "change",
    [{"password": ""}, {"password": None}, {"username": "someone-else"}],
    ids=["blank", "null", "omitted"],
)
async def test_blank_or_omitted_password_keeps_the_stored_one(tenant, db, keyring, side, change):
    inbox = await create(tenant, f"keep-{side}-{next(iter(change.values()))}@example.com")
    result = await update(tenant, inbox["id"], {side: change, "name": "renamed"})
    assert result["__typename"] == "UpdateEmailInboxSuccess", result
    assert result["inbox"][side]["hasPassword"] is True
    for each in ("smtp", "imap"):
        assert await stored_password(db, keyring, tenant, inbox["id"], each) == STORED[each]


CONNECTION_CHANGES = [
    ("smtp", {"host": "smtp2.example.com", "password": "p2"}),
    ("smtp", {"port": 2525}),
    ("smtp", {"security": "TLS"}),
    ("smtp", {"username": "other-user"}),
    ("smtp", {"password": "a-new-password"}),
    ("smtp", {"tlsCertificateSha256": "cd" * 32}),
    ("imap", {"host": "imap2.example.com", "password": "p2"}),
    ("imap", {"port": 143}),
    ("imap", {"security": "STARTTLS"}),
    ("imap", {"username": "other-user"}),
    ("imap", {"password": "a-new-password"}),
    ("imap", {"tlsCertificateSha256": "cd" * 32}),
]


@pytest.mark.parametrize(
    ("side", "change"),
    CONNECTION_CHANGES,
    ids=[f"{side}.{next(iter(change))}" for side, change in CONNECTION_CHANGES],
)
async def test_every_connection_change_goes_back_to_pending(tenant, db, side, change):
    inbox = await create(tenant, f"reverify-{side}-{next(iter(change))}@example.com")
    await mark_verified(db, inbox["id"])
    assert (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]["status"] == (
        "ACTIVE"
    )
    assert await open_tests(db, inbox["id"]) == []

    result = await update(tenant, inbox["id"], {side: change})
    assert result["__typename"] == "UpdateEmailInboxSuccess", result
    assert result["inbox"]["status"] == "PENDING"
    queued = await open_tests(db, inbox["id"])
    assert [(t.state, t.reason) for t in queued] == [("QUEUED", "SETTINGS_CHANGED")]


async def test_other_changes_keep_the_verification(tenant, db):
    inbox = await create(tenant, "keepstatus@example.com")
    await mark_verified(db, inbox["id"])
    result = await update(
        tenant,
        inbox["id"],
        {"name": "new name", "tags": ["x"], "dailySendLimit": 20, "smtp": {"password": ""}},
    )
    assert result["__typename"] == "UpdateEmailInboxSuccess", result
    assert result["inbox"]["status"] == "ACTIVE"
    assert await open_tests(db, inbox["id"]) == []
