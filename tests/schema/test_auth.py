"""API keys, permissions and tenancy, as a client meets them."""

from __future__ import annotations

from storage import api_keys
from storage.models import Permission
from tests.schema.fragments import CREATE, DELETE, GET, LIST, UPDATE, minimal_input

VIEWER = "{ viewer { permissions workspace { name } } }"


async def test_missing_key_is_unauthenticated(anonymous):
    response = await anonymous(VIEWER)
    assert response.status == 200
    assert response.error_codes() == ["UNAUTHENTICATED"]
    assert "Authorization: Bearer" in response.errors[0]["message"]
    created = await anonymous(CREATE, {"input": minimal_input()})
    assert created.error_codes() == ["UNAUTHENTICATED"]


async def test_malformed_and_unknown_keys_are_unauthenticated(anonymous):
    for key in ("nonsense", "inbx_000000000000_" + "x" * 43):
        response = await anonymous.with_key(key)(VIEWER)
        assert response.error_codes() == ["UNAUTHENTICATED"]


async def test_x_api_key_header_works(tenant, anonymous):
    response = await anonymous(VIEWER, headers={"x-api-key": tenant.key})
    assert response.data["viewer"]["workspace"]["name"] == tenant.workspace.name


async def test_revoked_key_is_refused(tenant, db):
    assert (await tenant.client(VIEWER)).data
    async with db.connection() as connection:
        await api_keys.revoke_api_key(connection, tenant.key)
    response = await tenant.client(VIEWER)
    assert response.error_codes() == ["UNAUTHENTICATED"]


async def test_view_only_key_cannot_write(tenant, db, anonymous):
    view_key = await tenant.key_with(db, Permission.VIEW_EMAIL_INBOX)
    viewer = anonymous.with_key(view_key)
    created = await viewer(CREATE, {"input": minimal_input()})
    assert created.error_codes() == ["FORBIDDEN"]
    assert "manage-email-inbox" in created.errors[0]["message"]
    assert (await viewer(LIST, {"first": 5})).data["emailInboxes"]["totalCount"] == 0
    inbox = (await tenant.client(CREATE, {"input": minimal_input()})).data["createEmailInbox"][
        "inbox"
    ]
    for query, variables in (
        (UPDATE, {"id": inbox["id"], "input": {"name": "x"}}),
        (DELETE, {"id": inbox["id"]}),
    ):
        assert (await viewer(query, variables)).error_codes() == ["FORBIDDEN"]
    assert (await viewer(GET, {"id": inbox["id"]})).data["emailInbox"]["id"] == inbox["id"]


async def test_manage_only_key_can_read(tenant, db, anonymous):
    manage_key = await tenant.key_with(db, Permission.MANAGE_EMAIL_INBOX)
    response = await anonymous.with_key(manage_key)(LIST, {"first": 5})
    assert response.data["emailInboxes"]["totalCount"] == 0


async def test_key_without_permissions_is_forbidden(tenant, db, anonymous):
    bare = await tenant.key_with(db)
    response = await anonymous.with_key(bare)(LIST, {"first": 5})
    assert response.error_codes() == ["FORBIDDEN"]


async def test_other_workspace_looks_like_nothing(make_tenant):
    owner, stranger = await make_tenant(), await make_tenant()
    inbox = (await owner.client(CREATE, {"input": minimal_input()})).data["createEmailInbox"][
        "inbox"
    ]
    assert (await stranger.client(GET, {"id": inbox["id"]})).data["emailInbox"] is None
    listed = (await stranger.client(LIST, {"first": 50})).data["emailInboxes"]
    assert listed["totalCount"] == 0
    update = (await stranger.client(UPDATE, {"id": inbox["id"], "input": {"name": "pwned"}})).data[
        "updateEmailInbox"
    ]
    assert update["__typename"] == "NotFound"
    delete = (await stranger.client(DELETE, {"id": inbox["id"]})).data["deleteEmailInbox"]
    assert delete["__typename"] == "NotFound"
    # Identical to an id that never existed.
    missing = (await stranger.client(DELETE, {"id": "00000000-0000-0000-0000-000000000000"})).data[
        "deleteEmailInbox"
    ]
    assert missing["message"].replace("00000000-0000-0000-0000-000000000000", "ID") == delete[
        "message"
    ].replace(inbox["id"], "ID")
    still = (await owner.client(GET, {"id": inbox["id"]})).data["emailInbox"]
    assert still["name"] == inbox["name"]
