"""Create, read, list, update and delete over GraphQL against the real server and Postgres."""

from __future__ import annotations

import asyncio
import uuid

from storage import inboxes
from tests.schema.fragments import CREATE, DELETE, GET, LIST, UPDATE, minimal_input
from tests.schema.test_inbox_updates import mark_verified

FULL_INPUT = {
    "name": "Support inbox",
    "email": "Support@Company.COM",
    "displayName": "Company Support",
    "description": "Where customers write to",
    "senderInfo": "Company Support Team",
    "department": "support",
    "active": False,
    "provider": "CUSTOM",
    "smtp": {
        "host": "SMTP.company.com",
        "port": 465,
        "security": "TLS",
        "username": "support-smtp",
        "password": "smtp-secret-123",
    },
    "imap": {
        "host": "imap.company.com",
        "port": 143,
        "security": "STARTTLS",
        "username": "support-imap",
        "password": "imap-secret-456",
        "tlsCertificateSha256": "AB:" * 31 + "AB",
    },
    "dailySendLimit": 30,
    "sendingEnabled": False,
    "signature": '<p onclick="x()">Best,<br>Support<script>alert(1)</script></p>',
    "tags": ["outreach", "support", "outreach"],
    "replyTo": "Replies@Company.com",
    "deleteMessagePolicy": "DELETE_ON_RECEIVE",
    "notifyOnNewMessages": True,
    "notificationEmail": "alerts@company.com",
    "dkimSelectors": ["Selector1", "google"],
}


async def create(client, input):
    response = await client(CREATE, {"input": input})
    return response.data["createEmailInbox"]


async def test_create_read_round_trips_every_field(tenant):
    created = await create(tenant.client, FULL_INPUT)
    assert created["__typename"] == "CreateEmailInboxSuccess", created
    inbox = created["inbox"]
    assert created["warnings"] == []
    assert inbox["email"] == "support@company.com"
    assert inbox["name"] == "Support inbox"
    assert inbox["displayName"] == "Company Support"
    assert inbox["description"] == "Where customers write to"
    assert inbox["senderInfo"] == "Company Support Team"
    assert inbox["department"] == "support"
    assert inbox["active"] is False
    assert inbox["provider"] == "CUSTOM"
    assert inbox["status"] == "PENDING"
    assert inbox["smtp"] == {
        "host": "smtp.company.com",
        "port": 465,
        "security": "TLS",
        "username": "support-smtp",
        "hasPassword": True,
        "tlsCertificateSha256": None,
    }
    assert inbox["imap"] == {
        "host": "imap.company.com",
        "port": 143,
        "security": "STARTTLS",
        "username": "support-imap",
        "hasPassword": True,
        "tlsCertificateSha256": "ab" * 32,
    }
    assert inbox["dailySendLimit"] == 30
    assert inbox["sendingEnabled"] is False
    assert "<script>" not in inbox["signature"] and "onclick" not in inbox["signature"]
    assert "Best," in inbox["signature"] and "<br>" in inbox["signature"]
    assert inbox["tags"] == ["outreach", "support"]
    assert inbox["replyTo"] == "replies@company.com"
    assert inbox["deleteMessagePolicy"] == "DELETE_ON_RECEIVE"
    assert inbox["notifyOnNewMessages"] is True
    assert inbox["notificationEmail"] == "alerts@company.com"
    assert inbox["dkimSelectors"] == ["selector1", "google"]
    assert inbox["errorCount"] == 0 and inbox["version"] == 1
    assert inbox["lastVerifiedAt"] is None and inbox["setupStatus"] is None

    read = (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert read == inbox


async def test_defaults_and_imap_derived_from_smtp(tenant):
    created = await create(tenant.client, minimal_input("Sarah.Johnson@Example.com"))
    inbox = created["inbox"]
    assert inbox["displayName"] == "sarah.johnson"
    assert inbox["name"] == "sarah.johnson@example.com"
    assert inbox["dailySendLimit"] == 15
    assert inbox["active"] is True and inbox["sendingEnabled"] is True
    assert inbox["deleteMessagePolicy"] == "DONT_DELETE"
    assert inbox["smtp"]["security"] == "STARTTLS"
    assert inbox["smtp"]["username"] == "sarah.johnson@example.com"
    # IMAP omitted: same account, host derived from smtp.example.com, implicit TLS on 993.
    assert inbox["imap"] == {
        "host": "imap.example.com",
        "port": 993,
        "security": "TLS",
        "username": "sarah.johnson@example.com",
        "hasPassword": True,
        "tlsCertificateSha256": None,
    }


async def test_port_and_security_inferred_from_each_other(tenant):
    by_security = await create(
        tenant.client,
        {
            "email": "a@example.com",
            "smtp": {"host": "smtp.example.com", "security": "TLS", "password": "x"},
            "imap": {"host": "imap.example.com", "security": "STARTTLS"},
        },
    )
    assert by_security["inbox"]["smtp"]["port"] == 465
    assert by_security["inbox"]["imap"]["port"] == 143
    by_port = await create(
        tenant.client,
        {
            "email": "b@example.com",
            "smtp": {"host": "smtp.example.com", "port": 465, "password": "x"},
        },
    )
    assert by_port["inbox"]["smtp"]["security"] == "TLS"


async def test_provider_preset_fills_imap(tenant):
    created = await create(
        tenant.client,
        {
            "email": "me@gmail.com",
            "provider": "GMAIL",
            "smtp": {"host": "smtp.gmail.com", "password": "app-pass"},
        },
    )
    assert created["inbox"]["imap"]["host"] == "imap.gmail.com"
    assert created["inbox"]["imap"]["port"] == 993


async def test_imap_host_that_cannot_be_derived_is_a_field_error(tenant):
    created = await create(
        tenant.client,
        {"email": "a@example.com", "smtp": {"host": "relay.example.com", "password": "x"}},
    )
    assert created["__typename"] == "ValidationError"
    assert [f["field"] for f in created["fields"]] == ["imap.host"]


async def test_daily_send_limit_is_clamped_with_a_warning(tenant):
    high = await create(tenant.client, minimal_input("hi@example.com", dailySendLimit=500))
    assert high["inbox"]["dailySendLimit"] == 50
    assert high["warnings"][0]["field"] == "dailySendLimit"
    low = await create(tenant.client, minimal_input("lo@example.com", dailySendLimit=0))
    assert low["inbox"]["dailySendLimit"] == 1
    assert "stored as 1" in low["warnings"][0]["message"]


async def test_validation_names_each_field(tenant):
    bad = {
        "email": "not-an-email",
        "name": "x" * 201,
        "description": "d" * 2001,
        "smtp": {"host": "", "port": 70000, "password": "p"},
        "imap": {"host": "imap.example.com", "port": 0},
        "replyTo": "nope",
        "tags": ["t" * 51],
    }
    created = await create(tenant.client, bad)
    assert created["__typename"] == "ValidationError"
    assert created["code"] == "VALIDATION_FAILED"
    fields = {f["field"]: f["message"] for f in created["fields"]}
    assert set(fields) >= {
        "email",
        "name",
        "description",
        "smtp.host",
        "smtp.port",
        "imap.port",
        "replyTo",
        "tags[0]",
    }
    assert "65535" in fields["smtp.port"]
    assert "200" in fields["name"]
    # Nothing was stored.
    listed = await tenant.client(LIST, {"first": 10})
    assert listed.data["emailInboxes"]["totalCount"] == 0


async def test_missing_password_is_a_field_error(tenant):
    created = await create(
        tenant.client, {"email": "a@example.com", "smtp": {"host": "smtp.example.com"}}
    )
    assert [f["field"] for f in created["fields"]] == ["smtp.password"]


async def test_duplicate_email_in_any_case(tenant):
    first = await create(tenant.client, minimal_input("dup@example.com"))
    second = await create(tenant.client, minimal_input("DUP@Example.COM"))
    assert second["__typename"] == "DuplicateEmailInbox"
    assert second["email"] == "dup@example.com"
    assert second["existingId"] == first["inbox"]["id"]


async def test_same_email_allowed_in_another_workspace(make_tenant):
    one, two = await make_tenant(), await make_tenant()
    assert (await create(one.client, minimal_input("same@example.com")))["__typename"] == (
        "CreateEmailInboxSuccess"
    )
    assert (await create(two.client, minimal_input("same@example.com")))["__typename"] == (
        "CreateEmailInboxSuccess"
    )


async def test_racing_duplicate_creates_store_one(tenant):
    results = await asyncio.gather(
        *(
            create(
                tenant.client,
                minimal_input("RACE@example.com".lower() if i % 2 else "Race@Example.com"),
            )
            for i in range(8)
        )
    )
    kinds = sorted(r["__typename"] for r in results)
    assert kinds.count("CreateEmailInboxSuccess") == 1
    assert kinds.count("DuplicateEmailInbox") == 7
    winner = next(r for r in results if r["__typename"] == "CreateEmailInboxSuccess")
    assert all(
        r["existingId"] == winner["inbox"]["id"]
        for r in results
        if r["__typename"] == "DuplicateEmailInbox"
    )


async def test_inbox_limit_and_racing_creates(make_tenant):
    tenant = await make_tenant(max_inboxes=3)
    results = await asyncio.gather(
        *(create(tenant.client, minimal_input(f"u{i}@example.com")) for i in range(10))
    )
    kinds = [r["__typename"] for r in results]
    assert kinds.count("CreateEmailInboxSuccess") == 3
    assert kinds.count("InboxLimitReached") == 7
    limited = next(r for r in results if r["__typename"] == "InboxLimitReached")
    assert limited["currentUsage"] == 3 and limited["maxInboxes"] == 3
    assert limited["requested"] == 1
    viewer = (await tenant.client("{ viewer { inboxUsage inboxLimit } }")).data["viewer"]
    assert viewer == {"inboxUsage": 3, "inboxLimit": 3}


async def test_inactive_subscription(make_tenant):
    tenant = await make_tenant(subscription_active=False)
    created = await create(tenant.client, minimal_input())
    assert created["__typename"] == "SubscriptionRequired"
    assert created["code"] == "SUBSCRIPTION_REQUIRED"


async def test_list_pagination_and_filters(tenant):
    for i in range(7):
        await create(
            tenant.client,
            minimal_input(
                f"user{i}@example.com",
                name=f"Inbox {i}",
                department="sales" if i % 2 else "support",
                tags=["vip"] if i < 2 else [],
                active=i != 3,
            ),
        )
    seen = []
    after = None
    pages = 0
    while True:
        page = (await tenant.client(LIST, {"first": 3, "after": after})).data["emailInboxes"]
        assert page["totalCount"] == 7
        seen += [edge["node"]["email"] for edge in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3
    assert seen == [f"user{i}@example.com" for i in range(7)]

    async def emails(flt):
        page = (await tenant.client(LIST, {"first": 50, "filter": flt})).data["emailInboxes"]
        assert page["totalCount"] == len(page["edges"])
        return sorted(e["node"]["email"] for e in page["edges"])

    assert await emails({"department": "sales"}) == [
        "user1@example.com",
        "user3@example.com",
        "user5@example.com",
    ]
    assert await emails({"tag": "vip"}) == ["user0@example.com", "user1@example.com"]
    assert await emails({"active": False}) == ["user3@example.com"]
    assert await emails({"search": "inbox 4"}) == ["user4@example.com"]
    assert await emails({"search": "USER6@"}) == ["user6@example.com"]
    assert await emails({"search": "%"}) == []
    assert await emails({"status": "PENDING"}) == [f"user{i}@example.com" for i in range(7)]
    assert await emails({"status": "ACTIVE"}) == []


async def test_list_rejects_oversized_page_and_bad_cursor(tenant):
    too_big = await tenant.client(LIST, {"first": 1000})
    assert too_big.error_codes() == ["BAD_USER_INPUT"]
    assert "first" in too_big.errors[0]["message"]
    bad_cursor = await tenant.client(LIST, {"first": 5, "after": "garbage!"})
    assert bad_cursor.error_codes() == ["BAD_USER_INPUT"]


async def test_update_round_trips_and_keeps_password(tenant, db, keyring):
    inbox = (await create(tenant.client, FULL_INPUT))["inbox"]
    # This stack has no worker: stand in for the verification that would have passed, so the
    # PENDING asserted below is the update's doing.
    await mark_verified(db, inbox["id"])
    changes = {
        "name": "Renamed",
        "displayName": "New Name",
        "description": None,
        "department": "billing",
        "active": True,
        "dailySendLimit": 99,
        "tags": ["a"],
        "signature": "<b>Hi</b>",
        "replyTo": None,
        "deleteMessagePolicy": "DELETE_WHEN_DELETED",
        "notifyOnNewMessages": False,
        "smtp": {"username": "new-user", "password": ""},
    }
    updated = (await tenant.client(UPDATE, {"id": inbox["id"], "input": changes})).data[
        "updateEmailInbox"
    ]
    assert updated["__typename"] == "UpdateEmailInboxSuccess", updated
    after = updated["inbox"]
    assert after["name"] == "Renamed" and after["displayName"] == "New Name"
    assert after["description"] is None and after["department"] == "billing"
    assert after["dailySendLimit"] == 50 and updated["warnings"][0]["field"] == "dailySendLimit"
    assert after["tags"] == ["a"] and after["signature"] == "<b>Hi</b>"
    assert after["replyTo"] is None
    assert after["deleteMessagePolicy"] == "DELETE_WHEN_DELETED"
    assert after["smtp"]["username"] == "new-user" and after["smtp"]["hasPassword"] is True
    assert after["version"] == inbox["version"] + 1
    # A username change is a connection change: back to PENDING.
    assert after["status"] == "PENDING"
    # The blank password kept the stored one (not just "some password").
    async with db.connection() as connection:
        row = await inboxes.get_inbox(connection, tenant.workspace.id, uuid.UUID(inbox["id"]))
    assert inboxes.decrypt_password(keyring, row, "smtp_password").reveal() == "smtp-secret-123"
    # Untouched fields stay.
    assert after["senderInfo"] == inbox["senderInfo"]
    assert after["imap"] == inbox["imap"]
    read = (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert read == after


async def test_changing_host_requires_password(tenant):
    inbox = (await create(tenant.client, minimal_input()))["inbox"]
    refused = (
        await tenant.client(
            UPDATE, {"id": inbox["id"], "input": {"smtp": {"host": "evil.example"}}}
        )
    ).data["updateEmailInbox"]
    assert refused["__typename"] == "ValidationError"
    assert refused["fields"][0]["field"] == "smtp.password"
    read = (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert read["smtp"]["host"] == "smtp.example.com"
    accepted = (
        await tenant.client(
            UPDATE,
            {"id": inbox["id"], "input": {"smtp": {"host": "mail.other.example", "password": "n"}}},
        )
    ).data["updateEmailInbox"]
    assert accepted["inbox"]["smtp"]["host"] == "mail.other.example"


async def test_update_email_to_existing_is_duplicate(tenant):
    await create(tenant.client, minimal_input("one@example.com"))
    two = (await create(tenant.client, minimal_input("two@example.com")))["inbox"]
    result = (
        await tenant.client(UPDATE, {"id": two["id"], "input": {"email": "ONE@example.com"}})
    ).data["updateEmailInbox"]
    assert result["__typename"] == "DuplicateEmailInbox"
    read = (await tenant.client(GET, {"id": two["id"]})).data["emailInbox"]
    assert read["email"] == "two@example.com"


async def test_update_with_stale_version_conflicts(tenant):
    inbox = (await create(tenant.client, minimal_input()))["inbox"]
    result = (
        await tenant.client(
            UPDATE, {"id": inbox["id"], "input": {"name": "x"}, "expectedVersion": 99}
        )
    ).data["updateEmailInbox"]
    assert result["__typename"] == "VersionConflict"
    assert result["currentVersion"] == 1


async def test_delete(tenant):
    inbox = (await create(tenant.client, minimal_input()))["inbox"]
    deleted = (await tenant.client(DELETE, {"id": inbox["id"]})).data["deleteEmailInbox"]
    assert deleted == {"__typename": "DeleteEmailInboxSuccess", "id": inbox["id"]}
    assert (await tenant.client(GET, {"id": inbox["id"]})).data["emailInbox"] is None
    again = (await tenant.client(DELETE, {"id": inbox["id"]})).data["deleteEmailInbox"]
    assert again["__typename"] == "NotFound"
    bad = (await tenant.client(DELETE, {"id": "not-a-uuid"})).data["deleteEmailInbox"]
    assert bad["__typename"] == "ValidationError"


async def test_no_password_reachable_through_any_field(tenant):
    await create(tenant.client, FULL_INPUT)
    introspection = await tenant.client('{ __type(name: "ServerSettings") { fields { name } } }')
    names = {f["name"] for f in introspection.data["__type"]["fields"]}
    assert not {n for n in names if "password" in n.lower() and n != "hasPassword"}
    listed = await tenant.client(
        LIST.replace("tags active", "tags active smtp { host }"), {"first": 5}
    )
    assert "smtp-secret-123" not in str(listed.body)


async def test_duplicate_names_the_inbox_of_the_callers_workspace(make_tenant):
    one, two = await make_tenant(), await make_tenant()
    theirs = (await create(one.client, minimal_input("shared@example.com")))["inbox"]
    mine = (await create(two.client, minimal_input("shared@example.com")))["inbox"]
    again = await create(two.client, minimal_input("Shared@example.com"))
    assert again["__typename"] == "DuplicateEmailInbox"
    assert again["existingId"] == mine["id"]  # never the other workspace's inbox
    other = (await create(two.client, minimal_input("other@example.com")))["inbox"]
    renamed = (
        await two.client(UPDATE, {"id": other["id"], "input": {"email": "SHARED@example.com"}})
    ).data["updateEmailInbox"]
    assert renamed["__typename"] == "DuplicateEmailInbox"
    assert renamed["existingId"] == mine["id"] != theirs["id"]
