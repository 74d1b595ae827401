"""Abuse limits and failure behaviour: each limit is crossed and its typed answer checked."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from storage import api_keys
from storage.db import create_database
from tests.conftest import Stack, make_settings, running_stack
from tests.schema.fragments import CREATE, UPDATE, minimal_input
from tests.support.graphql import GraphQLClient
from tests.support.waiting import wait_until
from tests.support.ws import WSClient

VIEWER = "{ viewer { inboxUsage } }"
TEST_CONNECTION = """mutation($id: ID!) { testConnection(id: $id) { __typename
  ... on TestConnectionSuccess { connectionTest { id } }
  ... on RateLimited { code message retryAfterSeconds } } }"""


@asynccontextmanager
async def custom_stack(database_url, certs, keyring, **overrides: Any) -> AsyncIterator[Stack]:
    settings = make_settings(database_url, certs, None, **overrides)
    async with running_stack(settings, keyring, worker=False) as stack:
        yield stack


async def post(base_url: str, body: bytes | str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        return await http.post("/graphql", content=body, headers=headers)


# --- GraphQL document limits -------------------------------------------------------------


async def test_depth_limit(database_url, certs, keyring, make_tenant):
    # The deepest meaningful query of this schema is 9 levels (the default limit is 10), so
    # the limit is crossed here on a server configured lower.
    tenant = await make_tenant()
    deep = (
        "{ emailInboxes { edges { node { connectionTests { edges { node { smtp { tls { "
        "version } } } } } } } } }"
    )
    async with custom_stack(database_url, certs, keyring, max_query_depth=6) as stack:
        client = GraphQLClient(stack.base_url, tenant.key)
        try:
            response = await client(deep)
            assert "exceeds maximum operation depth" in response.errors[0]["message"]
            shallow = await client("{ emailInboxes { edges { node { id } } } }")
            assert shallow.data["emailInboxes"]["edges"] == []
        finally:
            await client.aclose()


async def test_alias_limit(tenant):
    many = "{ " + " ".join(f"a{i}: viewer {{ inboxUsage }}" for i in range(16)) + " }"
    response = await tenant.client(many)
    assert "aliases" in response.errors[0]["message"].lower()
    fine = "{ " + " ".join(f"a{i}: viewer {{ inboxUsage }}" for i in range(15)) + " }"
    assert (await tenant.client(fine)).data["a14"]["inboxUsage"] == 0


async def test_token_limit(tenant):
    huge = "{ " + " ".join("viewer { inboxUsage }" for _ in range(600)) + " }"
    response = await tenant.client(huge)
    assert "token" in response.errors[0]["message"].lower()


async def test_no_field_suggestions(tenant):
    response = await tenant.client("{ viewr { inboxUsage } }")
    message = response.errors[0]["message"]
    assert "viewr" in message and "Did you mean" not in message


async def test_batching_is_off(tenant, base_url):
    body = '[{"query": "{ viewer { inboxUsage } }"}, {"query": "{ viewer { inboxUsage } }"}]'
    response = await post(
        base_url,
        body,
        {"content-type": "application/json", "authorization": f"Bearer {tenant.key}"},
    )
    assert response.status_code == 400


async def test_mutation_over_get_is_refused(tenant, base_url):
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get(
            "/graphql",
            params={"query": 'mutation { deleteEmailInbox(id: "x") { __typename } }'},
            headers={"authorization": f"Bearer {tenant.key}"},
        )
        query = await http.get(
            "/graphql", params={"query": VIEWER}, headers={"authorization": f"Bearer {tenant.key}"}
        )
    assert response.status_code == 400
    assert "mutations are not allowed" in response.text.lower()
    assert query.status_code == 200


async def test_post_must_be_json(tenant, base_url):
    response = await post(
        base_url,
        "query={viewer{inboxUsage}}",
        {
            "content-type": "application/x-www-form-urlencoded",
            "authorization": f"Bearer {tenant.key}",
        },
    )
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_body_size_limit(tenant, base_url):
    big = '{"query": "{ viewer { inboxUsage } }", "variables": {"x": "' + "a" * 300_000 + '"}}'
    response = await post(
        base_url, big, {"content-type": "application/json", "authorization": f"Bearer {tenant.key}"}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_introspection_off_in_production(database_url, certs, keyring, make_tenant):
    tenant = await make_tenant()
    async with custom_stack(database_url, certs, keyring, environment="production") as stack:
        client = GraphQLClient(stack.base_url, tenant.key)
        try:
            response = await client("{ __schema { types { name } } }")
            assert "introspection" in response.errors[0]["message"].lower()
            assert (await client(VIEWER)).data["viewer"]["inboxUsage"] == 0
        finally:
            await client.aclose()


async def test_unexpected_errors_are_masked_with_a_request_id(tenant, db, capfd):
    from inboxd.logs import configure_logging

    inbox = (await tenant.client(CREATE, {"input": minimal_input()})).data["createEmailInbox"][
        "inbox"
    ]
    async with db.connection() as connection:  # a row this version of inboxd cannot read
        await connection.execute(
            "UPDATE email_inbox SET setup_status = $2 WHERE id = $1",
            uuid.UUID(inbox["id"]),
            {"mx": "garbage"},
        )
    configure_logging("INFO")
    try:
        response = await tenant.client(
            "query($id: ID!) { emailInbox(id: $id) { setupStatus { overall } } }",
            {"id": inbox["id"]},
        )
    finally:
        configure_logging("WARNING")
    error = response.errors[0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    request_id = error["extensions"]["requestId"]
    assert error["message"] == f"Unexpected error (request id {request_id})."
    assert "Traceback" not in str(response.body) and "KeyError" not in str(response.body)
    logged = capfd.readouterr().err
    assert request_id in logged and "unexpected error" in logged


async def test_database_unavailable_is_a_clear_error(keyring, certs, tenant):
    settings = make_settings(
        "postgresql://nobody@127.0.0.1:1/none", certs, None, db_connect_timeout=1.0
    )
    from inboxd.app import create_app
    from resolvers.state import AppState
    from tests.conftest import serve_app

    dead = create_database(settings.database_url or "", connect_timeout=1)
    server, task, url = await serve_app(create_app(settings, AppState(db=dead, keyring=keyring)))
    try:
        client = GraphQLClient(url, tenant.key)
        response = await client(VIEWER)
        assert response.status == 200
        assert response.error_codes() == ["SERVICE_UNAVAILABLE"]
        assert "unavailable" in response.errors[0]["message"]
        await client.aclose()
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/readyz")).status_code == 503
    finally:
        server.should_exit = True
        await task
        await dead.dispose()


# --- rates --------------------------------------------------------------------------------


async def test_request_rate_per_key(database_url, certs, keyring, make_tenant):
    tenant, other = await make_tenant(), await make_tenant()
    async with custom_stack(
        database_url, certs, keyring, rate_limit_requests_per_minute=5
    ) as stack:
        client = GraphQLClient(stack.base_url, tenant.key)
        try:
            statuses = [(await client(VIEWER)).status for _ in range(5)]
            assert statuses == [200] * 5
            async with httpx.AsyncClient(base_url=stack.base_url) as http:
                limited = await http.post(
                    "/graphql",
                    json={"query": VIEWER},
                    headers={"authorization": f"Bearer {tenant.key}"},
                )
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            extensions = limited.json()["errors"][0]["extensions"]
            assert extensions["code"] == "RATE_LIMITED" and extensions["retryAfterSeconds"] >= 1
            # Another key is not affected.
            assert (await client.with_key(other.key)(VIEWER)).status == 200
        finally:
            await client.aclose()


async def test_test_connection_rate_per_inbox(database_url, certs, keyring, make_tenant, db):
    tenant = await make_tenant()
    async with custom_stack(
        database_url, certs, keyring, rate_limit_tests_per_inbox_per_minute=2
    ) as stack:
        client = GraphQLClient(stack.base_url, tenant.key)
        try:
            inbox = (await client(CREATE, {"input": minimal_input()})).data["createEmailInbox"][
                "inbox"
            ]
            results = []
            for _ in range(3):
                # Finish the open test each time, as a worker would, so a new one is made.
                async with db.connection() as connection:
                    await connection.execute(
                        "UPDATE connection_test SET state = 'PASSED' WHERE inbox_id = $1",
                        uuid.UUID(inbox["id"]),
                    )
                results.append(
                    (await client(TEST_CONNECTION, {"id": inbox["id"]})).data["testConnection"]
                )
            assert [r["__typename"] for r in results] == [
                "TestConnectionSuccess",
                "TestConnectionSuccess",
                "RateLimited",
            ]
            assert 1 <= results[2]["retryAfterSeconds"] <= 60
            assert results[2]["code"] == "RATE_LIMITED"
        finally:
            await client.aclose()


async def test_logins_to_one_account_are_spaced_across_workspaces(
    database_url, certs, keyring, make_tenant, db
):
    one, two = await make_tenant(), await make_tenant()
    async with custom_stack(database_url, certs, keyring, verification_spacing_seconds=30) as stack:
        target = {"host": "mail.victim-corp.com", "port": 587, "username": "ceo@victim-corp.com"}
        created = []
        for tenant, guess in ((one, "guess-1"), (two, "guess-2"), (one, "guess-3")):
            client = GraphQLClient(stack.base_url, tenant.key)
            response = await client(
                CREATE,
                {
                    "input": {
                        "email": f"{guess}@example.com",
                        "smtp": {**target, "password": guess},
                        "imap": {"host": "imap.victim-corp.com", "username": "ceo@victim-corp.com"},
                    }
                },
            )
            created.append(uuid.UUID(response.data["createEmailInbox"]["inbox"]["id"]))
            await client.aclose()
    async with db.connection() as connection:
        run_after = [
            await connection.fetchval(
                "SELECT run_after FROM connection_test WHERE inbox_id = $1", inbox_id
            )
            for inbox_id in created
        ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(run_after)]
    assert all(gap >= 29.9 for gap in gaps), gaps


# --- websockets ---------------------------------------------------------------------------


async def test_connection_init_timeout(database_url, certs, keyring):
    async with custom_stack(
        database_url, certs, keyring, ws_connection_init_timeout_seconds=0.3
    ) as stack:
        import websockets

        url = stack.base_url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4408


async def test_subscriptions_per_connection_cap(database_url, certs, keyring, make_tenant):
    tenant = await make_tenant()
    async with custom_stack(
        database_url, certs, keyring, ws_max_subscriptions_per_connection=2
    ) as stack:
        ws = await WSClient.connect(stack.base_url, tenant.key)
        try:
            subs = [
                await ws.subscribe("subscription { emailInboxEvents { kind } }") for _ in range(3)
            ]
            refused = await ws.next_payload(subs[2], timeout=5)
            assert refused["type"] == "error"
            assert "limit" in refused["payload"][0]["message"].lower()
        finally:
            await ws.close()


async def test_connections_per_key_cap(database_url, certs, keyring, make_tenant):
    tenant = await make_tenant()
    async with custom_stack(database_url, certs, keyring, ws_max_connections_per_key=2) as stack:
        first = await WSClient.connect(stack.base_url, tenant.key)
        second = await WSClient.connect(stack.base_url, tenant.key)
        third = await WSClient.connect(stack.base_url, tenant.key, ack=False)
        try:
            with pytest.raises(ConnectionClosed):
                await third.receive(timeout=5)
            assert third.connection.close_code == 4403
            await first.close()
            server = stack.app.state.graphql.ws
            await wait_until(lambda: server.open_connections == 1, "the closed slot was released")
            fourth = await WSClient.connect(stack.base_url, tenant.key)  # a slot is free again
            await fourth.close()
        finally:
            for ws in (second, third):
                await ws.close()


async def test_revoked_key_subscriptions_end(database_url, certs, keyring, make_tenant, db):
    tenant = await make_tenant()
    async with custom_stack(database_url, certs, keyring, ws_key_recheck_seconds=0.2) as stack:
        ws = await WSClient.connect(stack.base_url, tenant.key)
        try:
            await ws.subscribe("subscription { emailInboxEvents { kind } }")
            async with db.connection() as connection:
                await api_keys.revoke_api_key(connection, tenant.key)
            with pytest.raises(ConnectionClosed):
                await ws.receive(timeout=5)
            assert ws.connection.close_code == 4403
        finally:
            await ws.close()


# --- audit trail --------------------------------------------------------------------------

AUDIT = """query($inboxId: ID, $after: String) { auditLog(first: 4, inboxId: $inboxId,
  after: $after) { edges { cursor node { action inboxId apiKeyPrefix clientAddress details at } }
  pageInfo { hasNextPage endCursor } } }"""


async def test_audit_trail(make_tenant, db, anonymous):
    from storage.models import Permission

    tenant, stranger = await make_tenant(), await make_tenant()
    secret = "Audit-Canary-Password-3310"
    inbox = (
        await tenant.client(
            CREATE,
            {
                "input": minimal_input(
                    "audited@example.com", smtp={"host": "smtp.example.com", "password": secret}
                )
            },
        )
    ).data["createEmailInbox"]["inbox"]
    await tenant.client(
        UPDATE,
        {"id": inbox["id"], "input": {"name": "renamed", "smtp": {"password": secret + "-new"}}},
    )
    await tenant.client(TEST_CONNECTION, {"id": inbox["id"]})
    await tenant.client(
        "mutation($id: ID!) { deleteEmailInbox(id: $id) { __typename } }", {"id": inbox["id"]}
    )

    log = (await tenant.client(AUDIT, {"inboxId": inbox["id"]})).data["auditLog"]
    events = [edge["node"] for edge in log["edges"]]
    assert [e["action"] for e in events] == [
        "INBOX_DELETED",
        "INBOX_UPDATED",
        "INBOX_CREATED",
    ]  # newest first; the open test is reused
    assert all(e["apiKeyPrefix"] == tenant.key.split("_")[1] for e in events)
    assert all(e["clientAddress"] == "127.0.0.1" for e in events)
    assert events[1]["details"] == {"fields": ["name", "smtp.password"]}
    assert secret not in str(log)

    assert (await stranger.client(AUDIT, {"inboxId": inbox["id"]})).data["auditLog"]["edges"] == []
    view_only = await tenant.key_with(db, Permission.VIEW_EMAIL_INBOX)
    assert (await anonymous.with_key(view_only)(AUDIT, {})).error_codes() == ["FORBIDDEN"]


async def test_audit_log_and_test_history_page_by_cursor(tenant, db):
    inbox = (await tenant.client(CREATE, {"input": minimal_input("paged@example.com")})).data[
        "createEmailInbox"
    ]["inbox"]
    for i in range(4):
        await tenant.client(UPDATE, {"id": inbox["id"], "input": {"name": f"name {i}"}})
        async with db.connection() as connection:  # finish the open test, as a worker would
            await connection.execute(
                "UPDATE connection_test SET state = 'PASSED' WHERE inbox_id = $1",
                uuid.UUID(inbox["id"]),
            )
        await tenant.client(TEST_CONNECTION, {"id": inbox["id"]})

    actions, after = [], None
    while True:
        page = (await tenant.client(AUDIT, {"inboxId": inbox["id"], "after": after})).data[
            "auditLog"
        ]
        actions += [edge["node"]["action"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(actions) == 9 and actions[-1] == "INBOX_CREATED"  # 1 create, 4 updates, 4 tests

    history_query = """query($id: ID!, $after: String) { emailInbox(id: $id) {
      connectionTests(first: 2, after: $after) { edges { node { id } }
        pageInfo { hasNextPage endCursor } } } }"""
    seen, after = [], None
    while True:
        page = (await tenant.client(history_query, {"id": inbox["id"], "after": after})).data[
            "emailInbox"
        ]["connectionTests"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5  # the create's test and four requested ones
