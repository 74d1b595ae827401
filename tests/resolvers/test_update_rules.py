"""`updateEmailInbox` applies each field's rules as a create does: what is sent is normalised and
stored, what breaks a rule is a `ValidationError` naming the field, and nothing else changes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Tenant, Verifier
from tests.resolvers.test_internal_domains import public_only  # noqa: F401  (fixture)
from tests.schema.fragments import CREATE, UPDATE

FINGERPRINT = "AB:" * 31 + "AB"
# 253 characters: the longest name DNS allows.
LONGEST_HOST = ("a" * 63 + ".") * 3 + "a" * 61
# 254 characters: the longest address SMTP carries (RFC 5321 path limit).
LONGEST_EMAIL = "l" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"

BASE: dict[str, Any] = {
    "email": "base@example.com",
    "name": "Base",
    "displayName": "Base Name",
    "description": "about",
    "senderInfo": "the team",
    "department": "ops",
    "active": True,
    "sendingEnabled": True,
    "signature": "<b>Base</b>",
    "tags": ["t"],
    "replyTo": "replies@example.com",
    "deleteMessagePolicy": "DELETE_ON_RECEIVE",
    "dkimSelectors": ["s1"],
    "smtp": {"host": "smtp.example.com", "port": 587, "password": "smtp-pass-1"},
    "imap": {
        "host": "imap.example.com",
        "port": 993,
        "password": "imap-pass-1",
        "tlsCertificateSha256": FINGERPRINT,
    },
}

# (changes, what the inbox then shows); every field not named keeps its value.
APPLIED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"email": " New@Example.COM "}, {"email": "new@example.com"}),
    ({"email": "Alice@Corp.Internal"}, {"email": "alice@corp.internal"}),
    ({"email": LONGEST_EMAIL}, {"email": LONGEST_EMAIL}),
    ({"name": "  Renamed  "}, {"name": "Renamed"}),
    ({"displayName": "Shown"}, {"displayName": "Shown"}),
    (
        {"description": None, "senderInfo": None, "department": None},
        {"description": None, "senderInfo": None, "department": None},
    ),
    (
        {"description": " more ", "senderInfo": " us ", "department": " sales "},
        {"description": "more", "senderInfo": "us", "department": "sales"},
    ),
    ({"active": False}, {"active": False}),
    ({"sendingEnabled": False}, {"sendingEnabled": False}),
    (
        {"notifyOnNewMessages": True, "notificationEmail": "Alerts@Example.com"},
        {"notifyOnNewMessages": True, "notificationEmail": "alerts@example.com"},
    ),
    ({"provider": "GMAIL"}, {"provider": "GMAIL"}),
    ({"provider": None}, {"provider": "CUSTOM"}),
    ({"dailySendLimit": 20}, {"dailySendLimit": 20}),
    ({"signature": "<i>hi</i><script>x()</script>"}, {"signature": "<i>hi</i>"}),
    ({"signature": None}, {"signature": None}),
    ({"tags": [" a ", "", "a", "b"]}, {"tags": ["a", "b"]}),
    ({"tags": None}, {"tags": []}),
    ({"tags": [f"t{n}" for n in range(20)]}, {"tags": [f"t{n}" for n in range(20)]}),
    ({"tags": ["x" * 50]}, {"tags": ["x" * 50]}),
    ({"name": "n" * 200}, {"name": "n" * 200}),
    (
        {"signature": '<a href="https://example.com/">site</a>'},
        {"signature": '<a href="https://example.com/" rel="noopener noreferrer">site</a>'},
    ),
    ({"dkimSelectors": ["Sel1", "sel1", "google"]}, {"dkimSelectors": ["sel1", "google"]}),
    ({"replyTo": ""}, {"replyTo": None}),
    ({"replyTo": "Other@Example.com"}, {"replyTo": "other@example.com"}),
    ({"replyTo": "Replies@Corp.Internal"}, {"replyTo": "replies@corp.internal"}),
    (
        {"notificationEmail": "Alerts@Office.Lan"},
        {"notificationEmail": "alerts@office.lan"},
    ),
    (
        {"deleteMessagePolicy": "DELETE_WHEN_DELETED"},
        {"deleteMessagePolicy": "DELETE_WHEN_DELETED"},
    ),
    ({"deleteMessagePolicy": None}, {"deleteMessagePolicy": "DONT_DELETE"}),
    ({"smtp": {"port": 465}}, {"smtp": {"port": 465, "security": "TLS"}}),
    ({"smtp": {"port": 2525}}, {"smtp": {"port": 2525, "security": "STARTTLS"}}),
    ({"smtp": {"port": 1}}, {"smtp": {"port": 1, "security": "STARTTLS"}}),
    ({"imap": {"port": 65535}}, {"imap": {"port": 65535, "security": "STARTTLS"}}),
    ({"smtp": {"password": "p" * 1024}}, {}),
    ({"smtp": {"security": "TLS"}}, {"smtp": {"port": 465, "security": "TLS"}}),
    ({"imap": {"security": "STARTTLS"}}, {"imap": {"port": 143, "security": "STARTTLS"}}),
    ({"imap": {"port": 1143, "security": "NONE"}}, {"imap": {"port": 1143, "security": "NONE"}}),
    ({"smtp": {"username": " sender "}}, {"smtp": {"username": "sender"}}),
    ({"smtp": {"username": ""}}, {"smtp": {"username": "base@example.com"}}),
    ({"imap": {"username": "u" * 320}}, {"imap": {"username": "u" * 320}}),
    (
        {"smtp": {"tlsCertificateSha256": FINGERPRINT}},
        {"smtp": {"tlsCertificateSha256": "ab" * 32}},
    ),
    ({"imap": {"tlsCertificateSha256": None}}, {"imap": {"tlsCertificateSha256": None}}),
    ({"imap": {"tlsCertificateSha256": ""}}, {"imap": {"tlsCertificateSha256": None}}),
    (
        {"smtp": {"tlsCertificateSha256": " ".join(["Ab"] * 32)}},
        {"smtp": {"tlsCertificateSha256": "ab" * 32}},
    ),
    ({"imap": {"host": "IMAP.example.com."}}, {"imap": {"host": "imap.example.com"}}),
    (
        {"imap": {"host": "imap2.example.com", "password": "new-pass"}},
        {"imap": {"host": "imap2.example.com"}},
    ),
    (
        {"imap": {"host": "IMAP.EXAMPLE.BOX", "password": "new-pass"}},
        {"imap": {"host": "imap.example.box"}},
    ),
    ({"imap": {"host": "[::1]", "password": "new-pass"}}, {"imap": {"host": "::1"}}),
    ({"imap": {"host": LONGEST_HOST, "password": "new-pass"}}, {"imap": {"host": LONGEST_HOST}}),
    (
        {"dkimSelectors": [f"s{n}" for n in range(10)]},
        {"dkimSelectors": [f"s{n}" for n in range(10)]},
    ),
]

# (changes, the fields the ValidationError names, in order)
REFUSED: list[tuple[dict[str, Any], list[str]]] = [
    ({"email": "not-an-address"}, ["email"]),
    ({"email": None}, ["email"]),
    ({"email": "e" + LONGEST_EMAIL}, ["email"]),
    ({"name": None}, ["name"]),
    ({"name": "   "}, ["name"]),
    ({"name": "n" * 201}, ["name"]),
    ({"displayName": None}, ["displayName"]),
    ({"displayName": ""}, ["displayName"]),
    ({"department": "d" * 101}, ["department"]),
    ({"signature": "s" * 20_001}, ["signature"]),
    ({"active": None}, ["active"]),
    ({"sendingEnabled": None}, ["sendingEnabled"]),
    ({"notifyOnNewMessages": None}, ["notifyOnNewMessages"]),
    ({"notifyOnNewMessages": True}, ["notificationEmail"]),
    ({"tags": ["ok", "x" * 51]}, ["tags[1]"]),
    ({"tags": ["x" * 51, "ok", "y" * 51]}, ["tags[0]", "tags[2]"]),
    ({"tags": [f"t{n}" for n in range(21)]}, ["tags"]),
    ({"dkimSelectors": ["good", "bad_selector!"]}, ["dkimSelectors[1]"]),
    ({"replyTo": "nope"}, ["replyTo"]),
    ({"notificationEmail": "nope"}, ["notificationEmail"]),
    ({"smtp": {"port": 70000}}, ["smtp.port"]),
    ({"smtp": {"port": 65536}}, ["smtp.port"]),
    ({"imap": {"port": 0}}, ["imap.port"]),
    ({"smtp": {"username": "u" * 321}}, ["smtp.username"]),
    ({"imap": {"username": "u" * 321}}, ["imap.username"]),
    ({"imap": {"tlsCertificateSha256": "zz"}}, ["imap.tlsCertificateSha256"]),
    ({"smtp": {"password": "p" * 1025}}, ["smtp.password"]),
    ({"smtp": {"host": "bad host!"}}, ["smtp.host"]),
    ({"imap": {"host": "imap.example.com]", "password": "p"}}, ["imap.host"]),
    ({"imap": {"host": LONGEST_HOST + "a", "password": "p"}}, ["imap.host"]),
    ({"dkimSelectors": [f"s{n}" for n in range(11)]}, ["dkimSelectors"]),
    ({"email": "bad", "smtp": {"port": 0}, "tags": ["y" * 51]}, ["email", "tags[0]", "smtp.port"]),
]


async def create(tenant: Tenant) -> dict[str, Any]:
    response = await tenant.client(CREATE, {"input": BASE})
    payload: dict[str, Any] = response.data["createEmailInbox"]
    assert payload["__typename"] == "CreateEmailInboxSuccess", payload
    return payload["inbox"]  # type: ignore[no-any-return]


async def update(tenant: Tenant, inbox_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    response = await tenant.client(UPDATE, {"id": inbox_id, "input": changes})
    assert not response.errors, response.errors
    return response.data["updateEmailInbox"]  # type: ignore[no-any-return]


def unchanged(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """`before` with only the volatile fields (version, timestamps, status) taken from `after`."""
    volatile = ("version", "updatedAt", "status", "statusReason", "lastCheckAt")
    return {**before, **{k: after[k] for k in volatile}}


@pytest.mark.parametrize(("changes", "shown"), APPLIED)
async def test_an_update_stores_what_was_sent_normalised(
    tenant: Tenant, changes: dict[str, Any], shown: dict[str, Any]
) -> None:
    before = await create(tenant)
    payload = await update(tenant, before["id"], changes)
    assert payload["__typename"] == "UpdateEmailInboxSuccess", payload
    assert payload["warnings"] == []
    after = payload["inbox"]
    expected = unchanged(before, after)
    for key, value in shown.items():
        expected[key] = {**before[key], **value} if isinstance(value, dict) else value
    assert after == expected


async def test_a_send_limit_out_of_range_is_clamped_with_a_warning(tenant: Tenant) -> None:
    before = await create(tenant)
    payload = await update(tenant, before["id"], {"dailySendLimit": 0})
    assert payload["inbox"]["dailySendLimit"] == 1
    assert [w["field"] for w in payload["warnings"]] == ["dailySendLimit"]


async def test_notifications_may_be_turned_on_once_an_address_is_stored(tenant: Tenant) -> None:
    before = await create(tenant)
    stored = await update(tenant, before["id"], {"notificationEmail": "alerts@example.com"})
    assert stored["inbox"]["notificationEmail"] == "alerts@example.com"
    on = await update(tenant, before["id"], {"notifyOnNewMessages": True})
    assert on["__typename"] == "UpdateEmailInboxSuccess", on
    assert on["inbox"]["notifyOnNewMessages"] is True
    cleared = await update(tenant, before["id"], {"notificationEmail": ""})
    assert [f["field"] for f in cleared["fields"]] == ["notificationEmail"]


@pytest.mark.parametrize(("changes", "fields"), REFUSED)
async def test_an_update_that_breaks_a_rule_names_the_field_and_changes_nothing(
    tenant: Tenant, changes: dict[str, Any], fields: list[str]
) -> None:
    before = await create(tenant)
    payload = await update(tenant, before["id"], changes)
    assert payload["__typename"] == "ValidationError", payload
    assert payload["code"] == "VALIDATION_FAILED"
    assert [f["field"] for f in payload["fields"]] == fields
    assert all(f["message"] for f in payload["fields"])
    response = await tenant.client(
        "query($id: ID!) { emailInbox(id: $id) { version name email } }", {"id": before["id"]}
    )
    assert response.data["emailInbox"] == {
        "version": before["version"],
        "name": before["name"],
        "email": before["email"],
    }


async def test_an_internal_address_is_refused_on_update_by_default(
    public_only: Verifier,  # noqa: F811
) -> None:
    tenant = await public_only.tenant()
    before = await create(tenant)
    payload = await update(tenant, before["id"], {"email": "alice@corp.internal"})
    assert payload["__typename"] == "ValidationError", payload
    assert [f["field"] for f in payload["fields"]] == ["email"]
    assert "INBOXD_ALLOW_PRIVATE_HOSTS" in payload["fields"][0]["message"]


async def test_a_malformed_id_is_named_as_the_id(tenant: Tenant) -> None:
    refused = await update(tenant, "not-an-id", {"name": "x"})
    assert refused["__typename"] == "ValidationError", refused
    assert [f["field"] for f in refused["fields"]] == ["id"]
    # Reading one is like reading one that does not exist.
    response = await tenant.client('query { emailInbox(id: "not-an-id") { id } }')
    assert not response.errors and response.data["emailInbox"] is None


@pytest.mark.parametrize("blank", ["", "   "])
async def test_a_blank_email_is_missing_not_malformed(tenant: Tenant, blank: str) -> None:
    before = await create(tenant)
    refused = await update(tenant, before["id"], {"email": blank})
    assert refused["fields"] == [{"field": "email", "message": "is required"}]
